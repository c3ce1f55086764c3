"""Per-call stereo recordings: layout, the header kept valid as the call goes, names."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np

from media.recorder import CallRecorder, open_recording, recording_path

RATE = 8000
FRAME = 320


def tagged(value: int) -> bytes:
    return np.full(FRAME // 2, value, dtype="<i2").tobytes()


def channels(path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    with wave.open(str(path), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth()) == (2, 2)
        rate = wav.getframerate()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    return samples[0::2], samples[1::2], rate


def test_caller_frames_that_run_ahead_wait_for_the_agent_clock(tmp_path):
    recorder = open_recording(tmp_path, "burst", RATE)
    for i in range(10):  # a burst of caller audio (AudioSocket delivers what it has)
        recorder.caller(tagged(i + 1))
    for _ in range(12):
        recorder.agent(None)
    recorder.close()
    left, _, _ = channels(tmp_path / "burst.wav")
    assert [int(f[0]) for f in left.reshape(12, -1)] == list(range(1, 11)) + [0, 0]


def test_caller_left_agent_right_in_step(tmp_path):
    recorder = open_recording(tmp_path, "abc", RATE)
    for i in range(120):
        if i % 3 == 0:
            recorder.caller(tagged(1000 + i))
        recorder.agent(None if i % 2 else tagged(-1000 - i))
    recorder.close()
    left, right, rate = channels(tmp_path / "abc.wav")
    assert rate == RATE and len(left) == 120 * FRAME // 2
    frames_left, frames_right = left.reshape(120, -1), right.reshape(120, -1)
    # Each caller frame lands on the tick it came in; silence where none waited.
    assert [int(f[0]) for f in frames_left] == [1000 + i if i % 3 == 0 else 0 for i in range(120)]
    assert [int(f[0]) for f in frames_right[:4]] == [-1000, 0, -1002, 0]


def test_the_file_is_a_valid_wav_while_the_call_goes_on(tmp_path):
    recorder = open_recording(tmp_path, "live", RATE)
    for i in range(175):  # 3.5 s
        recorder.caller(tagged(i))
        recorder.agent(tagged(-i))
    # Read from disk while the recorder is still open: the header covers the 3 s written.
    left, right, _ = channels(tmp_path / "live.wav")
    assert len(left) == 150 * FRAME // 2
    assert int(left[-1]) == 149 and int(right[-1]) == -149
    recorder.close()
    assert len(channels(tmp_path / "live.wav")[0]) == 175 * FRAME // 2


def test_a_killed_process_leaves_all_but_the_last_second(tmp_path):
    script = (
        "import os, signal, sys\n"
        "sys.path.insert(0, %r)\n"
        "from media.recorder import open_recording\n"
        "r = open_recording(%r, 'crash', 8000)\n"
        "for i in range(180):\n"
        "    r.caller(bytes(320)); r.agent(b'\\x10\\x00' * 160)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    ) % (str(Path(__file__).resolve().parents[1]), str(tmp_path))
    result = subprocess.run([sys.executable, "-c", script], check=False)
    assert result.returncode == -signal.SIGKILL
    left, right, _ = channels(tmp_path / "crash.wav")
    assert len(right) == 150 * FRAME // 2  # 3 of the 3.6 s: the last part was not yet due
    assert set(np.unique(right)) == {16}


def test_file_names_are_safe_recognisable_and_distinct(tmp_path):
    assert recording_path(tmp_path, "5b8c3f1e-9d2a-4c1b-8e7f-0a1b2c3d4e5f").name == \
        "5b8c3f1e-9d2a-4c1b-8e7f-0a1b2c3d4e5f.wav"  # a safe id is the name as it is
    at = recording_path(tmp_path, "a84b4c76e66710@pc33.atlanta.com").name
    assert at.startswith("a84b4c76e66710_pc33.atlanta.com-") and at.endswith(".wav")
    assert recording_path(tmp_path, "../../etc/passwd").parent == tmp_path
    assert recording_path(tmp_path, "../../etc/passwd").name.startswith("etc_passwd-")
    assert recording_path(tmp_path, "///").name.startswith("call-")
    assert len(recording_path(tmp_path, "x" * 500).name) < 150
    # Ids that differ only in characters a path cannot hold still get files of their own.
    names = {recording_path(tmp_path, call_id).name for call_id in ("a@b", "a/b", "a b", "a_b")}
    assert len(names) == 4


def test_a_repeated_call_id_never_overwrites_a_recording(tmp_path):
    first = open_recording(tmp_path, "same", RATE)
    first.agent(tagged(7))
    first.close()
    second = open_recording(tmp_path, "same", RATE)
    second.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["same-2.wav", "same.wav"]
    assert int(channels(tmp_path / "same.wav")[1][0]) == 7


def test_frames_of_the_wrong_size_are_fitted_not_fatal(tmp_path):
    recorder = open_recording(tmp_path / "deeper", "odd", RATE)
    recorder.caller(b"\x01\x00" * 10)  # short
    recorder.agent(b"\x02\x00" * 500)  # long
    recorder.close()
    left, right, _ = channels(tmp_path / "deeper" / "odd.wav")
    assert len(left) == FRAME // 2 and int(left[0]) == 1 and int(left[-1]) == 0 and int(right[-1]) == 2


def test_a_write_error_stops_the_recording_only(tmp_path):
    class Full:
        closed = False

        def __init__(self) -> None:
            self.writes = 0

        def write(self, data: bytes) -> int:
            self.writes += 1
            if self.writes > 1:  # the header went in; the disk is now full
                raise OSError(28, "No space left on device")
            return len(data)

        def flush(self) -> None:
            pass

        def close(self) -> None:
            self.closed = True

    recorder = CallRecorder(Full(), RATE)  # type: ignore[arg-type]
    for _ in range(120):
        recorder.agent(tagged(1))  # no exception reaches the caller's media clock
    recorder.close()
