"""RTP packets (RFC 3550): parsing, serialising, and the sender's counters."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from media.rtp import RtpError, RtpPacket, RtpSender, parse_rtp, seq_delta, seq_newer

# A PCMU packet as a softphone sends it: V=2, M=1, PT=0, seq 0x1234, ts 0xdeadbeef,
# SSRC 0x01020304, 160 bytes of mu-law silence.
WIRE = bytes.fromhex("80801234deadbeef01020304") + b"\xff" * 160


def test_parse_known_bytes() -> None:
    packet = parse_rtp(WIRE)
    assert packet == RtpPacket(
        payload_type=0,
        sequence=0x1234,
        timestamp=0xDEADBEEF,
        ssrc=0x01020304,
        payload=b"\xff" * 160,
        marker=True,
    )
    assert packet.to_bytes() == WIRE


def test_round_trip_with_csrcs_and_extension() -> None:
    packet = RtpPacket(
        payload_type=8,
        sequence=65535,
        timestamp=2**32 - 1,
        ssrc=7,
        payload=b"abc",
        csrcs=(1, 2**32 - 1),
        extension=(0xBEDE, b"\x10\xaa\x00\x00"),
    )
    data = packet.to_bytes()
    assert data[0] == 0x80 | 0x10 | 2  # V=2, X, CC=2
    assert len(data) == 12 + 8 + 4 + 4 + 3
    assert parse_rtp(data) == packet


def test_empty_extension_and_empty_payload() -> None:
    packet = RtpPacket(0, 1, 2, 3, b"", extension=(0x1000, b""))
    assert parse_rtp(packet.to_bytes()) == packet


def test_padding_is_stripped() -> None:
    data = bytearray(WIRE + b"\x00\x00\x03")
    data[0] |= 0x20
    assert parse_rtp(bytes(data)).payload == b"\xff" * 160


def test_padding_may_be_the_whole_body() -> None:
    data = bytearray(WIRE[:12] + b"\x00\x00\x00\x04")
    data[0] |= 0x20
    assert parse_rtp(bytes(data)).payload == b""


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "too short for RTP"),
        (b"\x80", "too short for RTP"),
        (WIRE[:11], "shorter than its 12-byte header"),
        (b"\x00" + WIRE[1:], "version 0"),
        (b"\x40" + WIRE[1:], "version 1"),
        (b"\xc0" + WIRE[1:], "version 3"),
        (b"\x83" + WIRE[1:12] + b"\x00" * 8, "too short for 3 CSRCs"),
        (b"\x90" + WIRE[1:12] + b"\xbe\xde", "truncated before its length"),
        (b"\x90" + WIRE[1:12] + b"\xbe\xde\x00\x02" + b"\x00" * 7, "runs past the packet end"),
        (b"\xa0" + WIRE[1:] + b"\x00", "padding count 0"),
        (b"\xa0" + WIRE[1:12] + b"\x00\x05", "padding count 5"),
        (b"\xb0" + WIRE[1:12] + b"\xbe\xde\x00\x00\x02", "padding count 2"),
    ],
)
def test_malformed_packets_say_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(RtpError, match=message):
        parse_rtp(data)


@pytest.mark.parametrize("packet_type", [200, 201, 202, 203, 204, 205, 206, 207])
def test_rtcp_on_a_multiplexed_port_is_recognised(packet_type: int) -> None:
    # RFC 5761 section 4: the RTCP packet type occupies the RTP marker + PT octet.
    rtcp = struct.pack("!BBHI", 0x80, packet_type, 1, 0x01020304)
    with pytest.raises(RtpError, match="^RTCP"):
        parse_rtp(rtcp)


def test_payload_type_with_marker_outside_rtcp_range_is_rtp() -> None:
    data = bytes([0x80, 0x80 | 96]) + WIRE[2:]
    packet = parse_rtp(data)
    assert (packet.payload_type, packet.marker) == (96, True)


def test_rtp_error_is_a_value_error() -> None:
    assert issubclass(RtpError, ValueError)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"payload_type": 128}, "payload type"),
        ({"sequence": 65536}, "sequence number"),
        ({"timestamp": -1}, "timestamp"),
        ({"ssrc": 2**32}, "SSRC"),
        ({"csrcs": tuple(range(16))}, "at most 15"),
        ({"csrcs": (2**32,)}, "CSRC list"),
        ({"extension": (65536, b"")}, "profile"),
        ({"extension": (1, b"abc")}, "words"),
    ],
)
def test_packet_fields_are_validated(kwargs: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {
        "payload_type": 0,
        "sequence": 0,
        "timestamp": 0,
        "ssrc": 0,
        "payload": b"",
    }
    fields.update(kwargs)
    with pytest.raises(ValueError, match=message):
        RtpPacket(**fields)  # type: ignore[arg-type]


def test_seq_comparisons_wrap() -> None:
    assert seq_newer(1, 0)
    assert not seq_newer(0, 1)
    assert not seq_newer(5, 5)
    assert seq_newer(0, 65535)
    assert seq_newer(10, 65530)
    assert not seq_newer(65530, 10)
    assert seq_delta(0, 65535) == 1
    assert seq_delta(65535, 0) == -1
    assert seq_delta(32767, 0) == 32767
    assert seq_delta(32768, 0) == -32768


@given(st.integers(0, 65535), st.integers(-32768, 32767))
def test_seq_delta_inverts_modular_addition(base: int, delta: int) -> None:
    assert seq_delta((base + delta) % 65536, base) == delta


class TestSender:
    def test_counters_advance_per_packet(self) -> None:
        sender = RtpSender(0, 8000, ssrc=42, sequence=100, timestamp=1000)
        first = parse_rtp(sender.packet(b"\xff" * 160, 160, marker=True))
        second = parse_rtp(sender.packet(b"\xff" * 160, 160))
        assert (first.sequence, first.timestamp, first.ssrc, first.marker) == (100, 1000, 42, True)
        assert (second.sequence, second.timestamp, second.marker) == (101, 1160, False)
        assert (sender.sequence, sender.timestamp) == (102, 1320)

    def test_skip_moves_the_timestamp_only(self) -> None:
        sender = RtpSender(8, 8000, ssrc=1, sequence=7, timestamp=0)
        sender.packet(b"x", 160)
        sender.skip(160)
        sender.skip(160)
        packet = parse_rtp(sender.packet(b"y", 160, marker=True))
        assert (packet.sequence, packet.timestamp, packet.payload_type) == (8, 480, 8)

    def test_counters_wrap(self) -> None:
        sender = RtpSender(0, 8000, ssrc=1, sequence=65535, timestamp=2**32 - 100)
        first = parse_rtp(sender.packet(b"", 160))
        second = parse_rtp(sender.packet(b"", 160))
        assert (first.sequence, first.timestamp) == (65535, 2**32 - 100)
        assert (second.sequence, second.timestamp) == (0, 60)

    def test_initial_values_are_random(self) -> None:
        senders = [RtpSender(0, 8000) for _ in range(8)]
        assert len({s.ssrc for s in senders}) > 1
        assert len({s.sequence for s in senders}) > 1
        assert len({s.timestamp for s in senders}) > 1
        assert all(0 <= s.ssrc < 2**32 and 0 <= s.sequence < 2**16 for s in senders)

    def test_rejects_bad_arguments(self) -> None:
        with pytest.raises(ValueError, match="payload type"):
            RtpSender(200, 8000)
        with pytest.raises(ValueError, match="clock rate"):
            RtpSender(0, 0)
        with pytest.raises(ValueError, match="back"):
            RtpSender(0, 8000).skip(-1)


packets = st.builds(
    RtpPacket,
    payload_type=st.integers(0, 127),
    sequence=st.integers(0, 65535),
    timestamp=st.integers(0, 2**32 - 1),
    ssrc=st.integers(0, 2**32 - 1),
    payload=st.binary(max_size=64),
    marker=st.booleans(),
    csrcs=st.lists(st.integers(0, 2**32 - 1), max_size=15).map(tuple),
    extension=st.none()
    | st.tuples(st.integers(0, 65535), st.binary(max_size=16).map(lambda b: b[: len(b) // 4 * 4])),
).filter(lambda p: p.payload_type | (0x80 if p.marker else 0) not in range(192, 224))


@given(packets)
def test_any_packet_round_trips(packet: RtpPacket) -> None:
    assert parse_rtp(packet.to_bytes()) == packet


@given(st.binary(max_size=80))
def test_garbage_raises_only_rtp_error(data: bytes) -> None:
    try:
        parse_rtp(data)
    except RtpError:
        pass
