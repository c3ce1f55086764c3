"""RFC 4733 DTMF from real captures: the dtmf_2833_*.pcap files that ship with sipp."""

from __future__ import annotations

import dataclasses
import random
import struct
from pathlib import Path

import pytest

from media.dtmf import DtmfReceiver
from media.rtp import parse_rtp

CAPTURES = Path("/usr/share/sip-tester")
NAMES = {"star": "*", "pound": "#"}


def rtp_of(capture: Path) -> list[bytes]:
    """The RTP payloads of UDP datagrams in a classic pcap file (Ethernet, IPv4)."""
    data = capture.read_bytes()
    assert struct.unpack("<I", data[:4])[0] == 0xA1B2C3D4 and struct.unpack("<I", data[20:24])[0] == 1
    offset, datagrams = 24, []
    while offset < len(data):
        length = struct.unpack("<I", data[offset + 8:offset + 12])[0]
        frame = data[offset + 16:offset + 16 + length]
        offset += 16 + length
        ip = frame[14:]
        header = (ip[0] & 0x0F) * 4
        datagrams.append(ip[header + 8:])  # past the UDP header
    return datagrams


def captures() -> list[Path]:
    found = sorted(CAPTURES.glob("dtmf_2833_*.pcap"))
    assert found, "sipp's DTMF captures are missing: apt-get install sip-tester (README, .ci/run)"
    return found


@pytest.mark.parametrize("capture", captures(), ids=lambda path: path.stem)
def test_each_capture_is_one_digit(capture):
    digit = capture.stem.removeprefix("dtmf_2833_")
    receiver = DtmfReceiver()
    heard = [d for d in (receiver.push(parse_rtp(data)) for data in rtp_of(capture)) if d is not None]
    assert heard == [NAMES.get(digit, digit)]  # the start, the growing durations, three ends: once


def test_reordered_lost_and_repeated_packets_still_give_each_digit_once():
    # four key presses in one stream: each capture's event moved to a timestamp of its own
    events = []
    for index, capture in enumerate(captures()[:4]):
        packets = [parse_rtp(data) for data in rtp_of(capture)]
        events.append([dataclasses.replace(p, timestamp=p.timestamp + index * 8000) for p in packets])
    expected = [DtmfReceiver().push(event[0]) for event in events]
    rng = random.Random(4733)
    stream = []
    for event in events:
        kept = [p for p in event if rng.random() > 0.3]  # lost, the start packet too at times
        kept += rng.sample(kept, k=len(kept) // 3)  # some duplicated
        rng.shuffle(kept)  # and reordered within the event (events are 100s of ms apart)
        stream += kept
    receiver = DtmfReceiver()
    assert [d for d in (receiver.push(p) for p in stream) if d is not None] == expected
