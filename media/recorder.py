"""Per-call stereo recording: the caller on the left, the agent on the right.

A recording is evidence (what did the agent say?) and training data, so it must survive
the process dying mid-call. The file is a valid WAV at every moment that matters: audio
goes to the operating system once a second, and after each write the RIFF and data sizes
in the header are rewritten to cover it. A killed process (SIGKILL, an OOM kill) loses
at most the second not yet written; what was written is in the kernel's page cache and
reaches the disk without us. Only a power cut can lose more, and an fsync per call per
second would cost more than it saves on a telephony box.

The agent side is the master clock: the pacer hands over one frame per tick, silence
included, and each tick takes one frame of the caller's audio (silence when none has
arrived), so the two channels stay in step however the caller's audio is delivered.
"""

from __future__ import annotations

import hashlib
import logging
import re
import struct
from collections import deque
from pathlib import Path
from typing import BinaryIO

import numpy as np

from media.audio import FRAME_MS, SAMPLE_WIDTH, frame_bytes

log = logging.getLogger("trivox.recording")

#: Ticks between writes: one second.
FLUSH_TICKS = 1000 // FRAME_MS
#: Caller audio allowed to queue ahead of the agent clock before the oldest is dropped.
MAX_BACKLOG_FRAMES = 50
HEADER_SIZE = 44
CHANNELS = 2
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME = 128


def _header(rate: int, data_bytes: int) -> bytes:
    """The canonical 44-byte header of 16-bit PCM WAV."""
    block = CHANNELS * SAMPLE_WIDTH
    return (b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
            + b"fmt " + struct.pack("<IHHIIHH", 16, 1, CHANNELS, rate, rate * block, block, 8 * SAMPLE_WIDTH)
            + b"data" + struct.pack("<I", data_bytes))


class CallRecorder:
    """Writes one call's two sides into ``file`` (opened for writing, binary) as it goes."""

    def __init__(self, file: BinaryIO, rate: int) -> None:
        self.rate = rate
        self._file = file
        self._frame = frame_bytes(rate)
        self._silence = bytes(self._frame)
        self._caller: deque[bytes] = deque()
        self._pending: list[bytes] = []  # interleaved frames not yet written
        self._written = 0
        self._dropped = 0
        self._closed = False
        file.write(_header(rate, 0))
        file.flush()

    def caller(self, frame: bytes) -> None:
        """A frame of the caller's audio, as the dialog hears it."""
        self._caller.append(frame)
        if len(self._caller) > MAX_BACKLOG_FRAMES:
            self._caller.popleft()
            self._dropped += 1

    def agent(self, frame: bytes | None) -> None:
        """The agent's frame of this tick (None: silence); it takes a caller frame along."""
        if self._closed:
            return
        caller = self._caller.popleft() if self._caller else self._silence
        left = np.frombuffer(self._fit(caller), dtype="<i2")
        right = np.frombuffer(self._silence if frame is None else self._fit(frame), dtype="<i2")
        stereo = np.empty(2 * len(right), dtype="<i2")
        stereo[0::2], stereo[1::2] = left, right
        self._pending.append(stereo.tobytes())
        if len(self._pending) >= FLUSH_TICKS:
            self.flush()

    def _fit(self, frame: bytes) -> bytes:
        """Exactly one frame: a short one padded with silence, a long one cut."""
        return frame if len(frame) == self._frame else frame[:self._frame].ljust(self._frame, b"\0")

    def flush(self) -> None:
        """Write what is pending and make the header cover it."""
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        try:
            self._file.write(data)
            self._written += len(data)
            end = self._file.tell()
            self._file.seek(0)
            self._file.write(_header(self.rate, self._written))
            self._file.seek(end)
            self._file.flush()
        except OSError as exc:  # a full disk must not end the call: the recording stops
            log.error("recording stopped: %s", exc)
            self._closed = True

    def close(self) -> None:
        if not self._closed:
            self.flush()
        self._closed = True
        if not self._file.closed:
            self._file.close()
        if self._dropped:
            log.warning("recording dropped %d caller frames that ran ahead of the agent clock", self._dropped)


def recording_path(directory: str | Path, call_id: str) -> Path:
    """A file name for the call: its id, when that is safe in a path as it is (UUIDs,
    most Call-IDs). Otherwise ('@', '/', anything a peer chose) the unsafe characters
    become '_' and a hash of the whole id is added, so that two ids that differ only in
    those characters still get two files."""
    name = _UNSAFE.sub("_", call_id).strip("._")[:MAX_NAME] or "call"
    if name != call_id:
        name += "-" + hashlib.sha1(call_id.encode(errors="replace")).hexdigest()[:10]
    return Path(directory) / f"{name}.wav"


def open_recording(directory: str | Path, call_id: str, rate: int) -> CallRecorder:
    """A recorder writing into ``directory`` (made if missing); an existing recording is
    never overwritten: a second call with the same id gets "-2", "-3"..."""
    path = recording_path(directory, call_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 100):
        candidate = path if attempt == 1 else path.with_name(f"{path.stem}-{attempt}.wav")
        try:
            return CallRecorder(open(candidate, "xb"), rate)
        except FileExistsError:
            continue
    raise FileExistsError(f"{path}: 99 recordings of this call id already exist")
