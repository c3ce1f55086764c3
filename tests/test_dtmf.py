"""RFC 4733 DTMF from real captures: the dtmf_2833_*.pcap files that ship with sipp."""

from __future__ import annotations

import dataclasses
import random
import struct
from pathlib import Path

import pytest

from media.dtmf import DtmfReceiver, DtmfSender
from media.rtp import RtpPacket, parse_rtp

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


def event_fields(payload: bytes) -> tuple[int, bool, int, int]:
    event, flags, duration = struct.unpack("!BBH", payload)
    return event, bool(flags & 0x80), flags & 0x3F, duration


def test_sender_packets_have_the_shape_of_a_real_key_press():
    sender = DtmfSender(8000)
    sender.send("5", duration_ms=100)
    packets, timestamp = [], 1000
    while (packet := sender.tick(timestamp)) is not None:
        packets.append(packet)
        timestamp += 160  # the audio clock runs on under the event
    fields = [event_fields(p.payload) for p in packets]
    # All of one event: one start timestamp, marker on the first packet only.
    assert {p.timestamp for p in packets} == {1000}
    assert [p.marker for p in packets] == [True] + [False] * (len(packets) - 1)
    # Durations grow by a packet (160) to 100 ms (800), then the end packet thrice.
    assert [f[3] for f in fields] == [160, 320, 480, 640, 800, 800, 800]
    assert [f[1] for f in fields] == [False] * 4 + [True] * 3
    assert {(f[0], f[2]) for f in fields} == {(5, 10)}
    # sipp's captured key presses have the same shape: one timestamp, three end packets.
    captured = [parse_rtp(data) for data in rtp_of(captures()[0])]
    ends = [p for p in captured if p.payload[1] & 0x80]
    assert len({p.timestamp for p in captured}) == 1 and len(ends) == 3


def test_sender_spaces_digits_and_the_receiver_hears_each_once():
    sender = DtmfSender(16000)  # a wideband call: durations on its 16 kHz clock
    sender.send("1#9", duration_ms=60)
    receiver, heard, ticks, timestamp = DtmfReceiver(), [], [], 0
    for _ in range(60):
        packet = sender.tick(timestamp)
        ticks.append(packet is not None)
        if packet is not None:
            heard.append(receiver.push(RtpPacket(payload_type=101, sequence=len(ticks), timestamp=packet.timestamp,
                                                 ssrc=1, payload=packet.payload, marker=packet.marker)))
        timestamp += 320
    assert [d for d in heard if d is not None] == ["1", "#", "9"]
    assert not sender.busy
    # 60 ms = 3 packets, the last repeated twice more (5 ticks), then 60 ms of audio (3).
    assert ticks[:16] == [True] * 5 + [False] * 3 + [True] * 5 + [False] * 3


def test_sender_rejects_what_is_not_a_digit():
    with pytest.raises(ValueError, match="not DTMF digits: 'x'"):
        DtmfSender(8000).send("1x")
    with pytest.raises(ValueError, match="shorter than one packet"):
        DtmfSender(8000).send("1", duration_ms=10)
