"""pyVoIP, a softphone library nobody here wrote, registers to trivox's standalone
registrar with digest auth, calls it through an INVITE challenge, hears the greeting,
and hangs up."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.conftest import start_trivox
from tests.phone import transcript_events

PHONE = Path(__file__).parent / "peers" / "pyvoip_phone.py"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_pyvoip_registers_calls_and_hears_the_greeting(tmp_path):
    server = start_trivox(tmp_path, '[sip]\nchallenge_invites = true\n'
                                    '[[sip.users]]\nusername = "1000"\npassword = "s3cret"\n')
    record = tmp_path / "heard.u8"
    try:
        phone = subprocess.run(
            [sys.executable, str(PHONE), "--server", "127.0.0.1", "--port", str(server.sip[1]),
             "--sip-port", str(free_udp_port()), "--rtp-low", str(free_udp_port() // 2 * 2),
             "--user", "1000", "--password", "s3cret", "--call", "echo", "--seconds", "4",
             "--record", str(record)],
            capture_output=True, text=True, timeout=60)
        steps = phone.stdout.split()
        assert phone.returncode == 0 and steps[:3] == ["REGISTERED", "ANSWERED", "HUNGUP"], \
            phone.stdout + phone.stderr[-3000:]
        server.wait_for_log(r"REGISTER from 1000 at 127\.0\.0\.1:\d+: 1 binding")
        server.wait_for_log(r"call ended after .*: the caller hung up")
    finally:
        server.stop()
    # pyVoIP records unsigned 8-bit samples centred on 128: the greeting is loud in them
    heard = np.frombuffer(record.read_bytes(), dtype=np.uint8).astype(np.float64) - 128
    frames = heard[: len(heard) // 160 * 160].reshape(-1, 160)
    loud = (np.sqrt((frames ** 2).mean(axis=1)) > 8).sum()  # above -24 dBFS
    assert loud * 0.02 > 0.5, f"only {loud} frames of speech heard"  # syllables of the greeting
    events = transcript_events(server.transcripts)
    assert events[-1]["reason"] == "the caller hung up"
    # pyVoIP answered both challenges (REGISTER, then INVITE with challenge_invites on)
    assert "refused" not in server.log()
