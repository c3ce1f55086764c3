"""The caller's side of an end-to-end test: speech, energy, and reading transcripts.

Test clients pack RTP and AudioSocket frames by hand with struct, independently of the
trivox code under test.
"""

from __future__ import annotations

import json
import math
import struct
import warnings
from pathlib import Path

import numpy as np

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

#: RMS (s16) above which a frame counts as speech; eSpeak speech peaks in the thousands.
SPEECH_RMS = 300


def rms(pcm: bytes) -> float:
    if len(pcm) < 2:
        return 0.0
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float64)
    return math.sqrt(float(np.mean(samples**2)))


def rtp_packet(seq: int, timestamp: int, ssrc: int, payload: bytes, pt: int = 0, marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF,
                       timestamp & 0xFFFFFFFF, ssrc) + payload


def rtp_payload(datagram: bytes) -> tuple[int, int, bool, bytes]:
    """(payload type, sequence, marker, payload) of a plain RTP packet."""
    first, second, seq = struct.unpack("!BBH", datagram[:4])
    assert first >> 6 == 2, "not RTP version 2"
    csrc = first & 0x0F
    return second & 0x7F, seq, bool(second & 0x80), datagram[12 + 4 * csrc:]


def ulaw_encode(pcm: bytes) -> bytes:
    return audioop.lin2ulaw(pcm, 2)


def ulaw_decode(payload: bytes) -> bytes:
    return audioop.ulaw2lin(payload, 2)


def transcript_events(folder: Path) -> list[dict]:
    events = []
    for path in sorted(folder.glob("*.jsonl")):
        events += [json.loads(line) for line in path.read_text().splitlines()]
    return events
