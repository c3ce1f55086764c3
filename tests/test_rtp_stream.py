"""One call's RTP stream on real loopback sockets, driven tick by tick.

The peers here are plain UDP sockets packing RTP and RTCP with struct, independent of
trivox's packet code.
"""

from __future__ import annotations

import socket
import struct

import numpy as np
import pytest
import trio

from media.codecs import PCMU
from media.rtp_stream import RtpStream, open_rtp_sockets

ULAW_TONE = PCMU.transcoder().encode((np.sin(np.arange(160) * 0.3) * 8000).astype("<i2").tobytes())


def rtp(seq: int, ssrc: int, pt: int = 0, payload: bytes = ULAW_TONE) -> bytes:
    return struct.pack("!BBHII", 0x80, pt, seq, seq * 160, ssrc) + payload


def peer() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(2)
    return sock


@pytest.fixture
def stream():
    sockets = open_rtp_sockets("127.0.0.1", 40000, 40999)
    rtp_stream = RtpStream(sockets, PCMU, ("127.0.0.1", 9), event_payload_type=101)
    yield rtp_stream
    rtp_stream.close()


async def ticks(stream: RtpStream, count: int, frame: bytes | None = None) -> None:
    for _ in range(count):
        await stream.tick(frame)
        await trio.sleep(0.001)  # let the kernel deliver between ticks


def test_ports_are_an_even_rtp_port_and_the_next_for_rtcp():
    sockets = open_rtp_sockets("127.0.0.1", 41001, 41100)
    try:
        assert sockets.port % 2 == 0 and 41002 <= sockets.port <= 41098
        assert sockets.rtcp.getsockname()[1] == sockets.port + 1
    finally:
        sockets.close()


async def test_latches_to_the_first_source_and_ignores_others(stream):
    first, intruder = peer(), peer()
    target = ("127.0.0.1", stream.local_port)
    try:
        first.sendto(rtp(1, 0xAAAA), target)
        await ticks(stream, 1)
        assert stream.remote == first.getsockname()  # latched, whatever the SDP said
        intruder.sendto(rtp(2, 0xBBBB), target)  # another source, after latching
        for seq in range(2, 10):
            first.sendto(rtp(seq, 0xAAAA), target)
        await ticks(stream, 10, frame=bytes(320))
        assert stream.stats.received == 9 and stream.stats.restarts == 0  # the intruder was not heard
        # Our audio goes back to the latched source (symmetric RTP), never to the intruder.
        data = first.recv(2048)
        assert data[1] & 0x7F == 0 and len(data) == 12 + 160
        intruder.settimeout(0.2)
        with pytest.raises(TimeoutError):
            intruder.recv(2048)
    finally:
        first.close()
        intruder.close()


async def test_a_new_ssrc_restarts_the_stream(stream):
    caller = peer()
    target = ("127.0.0.1", stream.local_port)
    try:
        for seq in range(1, 6):
            caller.sendto(rtp(seq, 0x1111), target)
        await ticks(stream, 5)
        for seq in range(500, 505):  # the caller's phone was replaced mid-call (a transfer)
            caller.sendto(rtp(seq, 0x2222), target)
        await ticks(stream, 5)
        assert stream.stats.restarts == 1 and stream.stats.lost == 0
    finally:
        caller.close()


async def test_dtmf_events_and_rtcp_reports_both_ways(stream):
    caller, caller_rtcp = peer(), peer()
    target = ("127.0.0.1", stream.local_port)
    digits: list[str] = []
    stream.on_digit = digits.append
    try:
        caller.sendto(rtp(1, 0x3333), target)
        caller.sendto(rtp(2, 0x3333, pt=101, payload=struct.pack("!BBH", 9, 0x8A, 800)), target)
        stream.rtcp.next_report = 0.0  # due now
        await ticks(stream, 2, frame=bytes(320))
        assert digits == ["9"]
        # Our report goes to the RTP source's port + 1 (RFC 3550 section 11).
        stream.retarget(("127.0.0.1", caller_rtcp.getsockname()[1] - 1))
        stream.rtcp.next_report = 0.0
        await ticks(stream, 1, frame=bytes(320))
        report = caller_rtcp.recv(2048)
        assert report[1] == 200  # an SR: we have sent audio
        # The caller's receiver report about our stream: 25% lost, jitter 80 units, and
        # our SR echoed at once (LSR: the middle 32 bits of its NTP time; DLSR 0).
        ntp_seconds, ntp_fraction = struct.unpack_from("!II", report, 8)
        lsr = ((ntp_seconds & 0xFFFF) << 16) | (ntp_fraction >> 16)
        block = struct.pack("!IIIIII", stream.rtcp.ssrc, (64 << 24) | 5, 100, 80, lsr, 0)
        rr = struct.pack("!BBHI", 0x81, 201, 7, 0x3333) + block
        caller_rtcp.sendto(rr, ("127.0.0.1", stream.local_port + 1))
        await ticks(stream, 30)  # RTCP is read every half second of ticks
        assert stream.rtcp.peer.fraction_lost == 0.25 and stream.rtcp.peer.jitter_ms == 10.0
        assert "the peer reports 25.0% lost, jitter 10.0 ms" in stream.summary()
        # Round trip: from our SR to the RR's arrival, here on loopback within the test's ticks.
        assert stream.rtcp.peer.round_trip_ms is not None and 0 <= stream.rtcp.peer.round_trip_ms < 500
    finally:
        caller.close()
        caller_rtcp.close()
