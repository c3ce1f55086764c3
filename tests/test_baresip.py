"""baresip, a softphone nobody here wrote, calls trivox directly (no registration).

baresip runs headless: its microphone is a WAV file (the aufile module) and what it hears
is dumped to WAV by the sndfile module. When the file ends, baresip hangs up with BYE.
The call must be set up, the greeting must reach baresip, trivox must hear and echo the
caller's sentence, and baresip's BYE must end the call on trivox's side.
"""

from __future__ import annotations

import shutil
import subprocess
import wave
from pathlib import Path

from tests.conftest import start_trivox
from tests.phone import SPEECH_RMS, rms, transcript_events
from tests.speech import speak
from tests.test_sipp_call import free_udp_port

#: 20 ms of 16-bit 8 kHz audio
FRAME_BYTES = 320


def write_wav(path: Path, pcm: bytes) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(pcm)


def baresip_config(folder: Path, microphone: Path, dumps: Path) -> None:
    """A config for a headless baresip on loopback: G.711 only, file in, files out."""
    rtp = free_udp_port() // 2 * 2
    folder.mkdir()
    (folder / "config").write_text(
        f"sip_listen\t127.0.0.1:{free_udp_port()}\n"
        "net_interface\t127.0.0.1\n"  # its SDP names loopback, not the host's other address
        f"rtp_ports\t{rtp}-{rtp + 20}\n"
        "audio_player\taubridge,nil\n"  # no sound card: a player that goes nowhere ...
        "audio_alert\taubridge,nil\n"
        f"audio_source\taufile,{microphone}\n"  # ... and a microphone that is a file
        "module_path\t/usr/lib/baresip/modules\n"
        "module\tg711.so\nmodule\taufile.so\nmodule\taubridge.so\n"
        "module\tsndfile.so\n"  # dumps the decoded audio it received to a WAV
        f"snd_path\t{dumps}\n"
        "module_app\taccount.so\nmodule_app\tmenu.so\n"
    )
    (folder / "accounts").write_text("<sip:baresip@127.0.0.1>;regint=0\n")


def test_baresip_calls_hears_the_greeting_is_echoed_and_hangs_up(tmp_path):
    assert shutil.which("baresip"), "baresip is missing: apt-get install baresip (README, .ci/run)"
    silence = bytes(8000 * 2 * 5)
    # 5 s for the greeting to play out, the sentence, 5 s for the echo; then the file ends
    microphone = tmp_path / "microphone.wav"
    pcm = silence + speak("hello there, this is a phone call", 8000) + silence
    write_wav(microphone, pcm)
    # baresip stays up after the call until -t runs out: a little longer than the file
    lifetime = len(pcm) // 16000 + 3
    dumps = tmp_path / "dumps"
    dumps.mkdir()
    baresip_config(tmp_path / "baresip", microphone, dumps)
    server = start_trivox(tmp_path)
    try:
        baresip = subprocess.run(
            ["baresip", "-f", str(tmp_path / "baresip"), "-e", f"/dial sip:echo@127.0.0.1:{server.sip[1]}",
             "-t", str(lifetime)],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        output = baresip.stdout + baresip.stderr
        assert baresip.returncode == 0, output[-3000:]
        assert "Call established: sip:echo@127.0.0.1" in output, output[-3000:]
        assert "terminated" in output, output[-3000:]  # it hung up when its file ended
        server.wait_for_log(r"call started from sip:baresip@127\.0\.0\.1")
        server.wait_for_log(r"call ended after .*: the caller hung up")
        # baresip sends RTCP receiver/sender reports: trivox read them into the call's stats.
        stats = server.wait_for_log(r"media: received (\d+) packets, lost (\d+).*; the peer reports "
                                    r"([\d.]+)% lost, jitter ([\d.]+) ms, round trip (\d+) ms")
        assert int(stats.group(1)) > 100 and int(stats.group(2)) == 0
        assert float(stats.group(3)) == 0.0
        assert int(stats.group(5)) < 100  # loopback: our SR echoed in baresip's LSR/DLSR
    finally:
        server.stop()
    (heard,) = dumps.glob("*-dec.wav")
    with wave.open(str(heard)) as dump:
        pcm = dump.readframes(dump.getnframes())
    speech = sum(rms(pcm[i:i + FRAME_BYTES]) > SPEECH_RMS for i in range(0, len(pcm), FRAME_BYTES))
    assert speech * 0.02 > 1.0, f"only {speech} frames of speech reached baresip"  # greeting and echo
    events = transcript_events(server.transcripts)
    caller = [e["text"] for e in events if e["kind"] == "caller"]
    assert caller and f"You said: {caller[0]}" in [e["text"] for e in events if e["kind"] == "agent"], events
    assert events[-1]["reason"] == "the caller hung up"
