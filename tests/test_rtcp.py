"""RTCP: packets against hand-built bytes, the receiver's statistics, and a session."""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from media.rtcp import (
    Goodbye,
    ReceiverReport,
    ReceptionStats,
    ReportBlock,
    RtcpError,
    RtcpSession,
    SenderReport,
    SourceDescription,
    compound,
    middle32,
    ntp_from_unix,
    parse_rtcp,
    round_trip_ms,
)


def hand_built_sr_and_sdes() -> bytes:
    """An SR with one report block and an SDES CNAME, laid out per RFC 3550 6.4.1/6.5."""
    sr = struct.pack("!BBH", 0x81, 200, 12)  # V=2, RC=1, PT=SR, length 12 words
    sr += struct.pack("!I", 0xAABBCCDD)  # sender SSRC
    sr += struct.pack("!IIIII", 0xE0000000, 0x80000000, 160_000, 50, 8000)  # NTP, RTP ts, packets, octets
    sr += struct.pack("!I", 0x11223344)  # block: source SSRC
    sr += struct.pack("!I", (64 << 24) | 0xFFFFFE)  # fraction 64/256, cumulative lost -2
    sr += struct.pack("!IIII", 0x0001_0005, 80, 0x12345678, 0x00018000)  # ext seq, jitter, LSR, DLSR 1.5 s
    cname = b"bob@10.0.0.1"
    chunk = struct.pack("!I", 0xAABBCCDD) + bytes([1, len(cname)]) + cname + b"\0"
    chunk += bytes(-len(chunk) % 4)
    sdes = struct.pack("!BBH", 0x81, 202, len(chunk) // 4) + chunk
    return sr + sdes


def test_parse_a_hand_built_compound_packet():
    sr, sdes = parse_rtcp(hand_built_sr_and_sdes())
    assert sr == SenderReport(0xAABBCCDD, 0xE0000000_80000000, 160_000, 50, 8000, (
        ReportBlock(0x11223344, 64, -2, 0x0001_0005, 80, 0x12345678, 0x00018000),))
    assert sdes == SourceDescription(((0xAABBCCDD, "bob@10.0.0.1"),))


def test_serialise_matches_the_hand_built_bytes():
    sr, sdes = parse_rtcp(hand_built_sr_and_sdes())
    assert compound(sr, sdes) == hand_built_sr_and_sdes()


def test_unknown_types_are_skipped_and_bye_reason_is_read():
    app = struct.pack("!BBH", 0x80, 204, 2) + struct.pack("!I", 7) + b"name"
    bye = Goodbye((7, 8), "hung up")
    packets = parse_rtcp(ReceiverReport(7).to_bytes() + app + bye.to_bytes())
    assert packets == [ReceiverReport(7), bye]


@pytest.mark.parametrize(("data", "message"), [
    (b"\x81\xc8\x00", "stray bytes"),
    (b"\x41\xc9\x00\x01" + bytes(4), "version 1"),
    (b"\x81\xc9\x00\x07" + bytes(8), "runs past"),
    (b"\x81\xc9\x00\x01" + bytes(4), "report count 1 needs"),
    (b"\xa0\xc9\x00\x01" + bytes(3) + b"\x09", "padding"),
    (b"\xa0\xc9\x00\x01" + bytes(4) + ReceiverReport(1).to_bytes(), "padding"),
])
def test_malformed_packets_say_what_is_wrong(data, message):
    with pytest.raises(RtcpError, match=message):
        parse_rtcp(data)


def test_a_compound_packet_starts_with_a_report():
    with pytest.raises(ValueError, match="starts with a sender or receiver report"):
        compound(SourceDescription(((1, "x"),)))


blocks = st.builds(ReportBlock, st.integers(0, 2**32 - 1), st.integers(0, 255), st.integers(-(2**23), 2**23 - 1),
                   st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1),
                   st.integers(0, 2**32 - 1))
reports = st.one_of(
    st.builds(SenderReport, st.integers(0, 2**32 - 1), st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1),
              st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.lists(blocks, max_size=4).map(tuple)),
    st.builds(ReceiverReport, st.integers(0, 2**32 - 1), st.lists(blocks, max_size=4).map(tuple)))
descriptions = st.builds(SourceDescription, st.lists(st.tuples(st.integers(0, 2**32 - 1),
                                                                st.text(max_size=40)), min_size=1, max_size=3).map(tuple))


@given(reports, descriptions, st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=3), st.text(max_size=30))
def test_any_compound_packet_round_trips(report, description, ssrcs, reason):
    bye = Goodbye(tuple(ssrcs), reason)
    parsed = parse_rtcp(compound(report, description, bye))
    assert parsed[0] == report
    assert [(s, n.encode()[:255].decode(errors="replace")) for s, n in description.chunks] == list(parsed[1].chunks)
    assert parsed[2].ssrcs == bye.ssrcs and parsed[2].reason == reason.encode()[:255].decode(errors="replace")


@given(st.binary(max_size=200))
def test_garbage_raises_only_rtcp_error(data):
    try:
        parse_rtcp(data)
    except RtcpError:
        pass


def feed(stats: ReceptionStats, sequences, *, clock: int = 8000, step: float = 0.02, start_seq: int = 0):
    for i, seq in enumerate(sequences):
        stats.on_packet(0x5555, (start_seq + seq) % 65536, (seq * 160) % 2**32, i * step)


def test_loss_is_counted_and_reordering_is_not_loss():
    stats = ReceptionStats(8000)
    order = list(range(200))
    order[50], order[51] = order[51], order[50]  # reordered
    lost = {10, 11, 12, 120}
    feed(stats, [s for s in order if s not in lost])
    assert stats.expected == 200 - 1  # the first packet is the probation's, as in A.1
    assert stats.lost == len(lost)
    block = stats.report_block(now=5.0)
    assert block.cumulative_lost == 4 and block.fraction_lost == 4 * 256 // 199


def test_fraction_lost_is_per_interval():
    stats = ReceptionStats(8000)
    feed(stats, range(100))
    assert stats.report_block(2.0).fraction_lost == 0
    feed(stats, [s for s in range(100, 200) if s % 4], start_seq=0)  # a quarter lost
    block = stats.report_block(4.0)
    assert block.fraction_lost == 25 * 256 // 100


def test_sequence_wrap_extends_the_highest_sequence():
    stats = ReceptionStats(8000)
    feed(stats, range(100), start_seq=65500)
    block = stats.report_block(2.0)
    assert block.highest_sequence == 65536 + (65500 + 99) % 65536
    assert stats.lost == 0


def test_a_restarted_source_is_believed_after_two_packets():
    stats = ReceptionStats(8000)
    feed(stats, range(50))
    stats.on_packet(0x5555, 30000, 0, 2.0)  # a jump: not believed yet
    assert stats.received == 49
    stats.on_packet(0x5555, 30001, 160, 2.02)  # its successor: the source restarted
    assert stats.extended_max % 65536 == 30001 and stats.lost == 0


def test_jitter_follows_the_a8_estimator():
    stats = ReceptionStats(8000)
    rng = random.Random(1)
    expected, previous = 0.0, None
    for i in range(500):
        arrival = i * 0.02 + rng.uniform(0, 0.010)
        stats.on_packet(1, i, i * 160, arrival)
        transit = arrival * 8000 - i * 160
        if previous is not None and i >= 2:  # the estimator starts once the source is valid
            expected += (abs(transit - previous) - expected) / 16
        previous = transit
    assert stats.jitter_ms == pytest.approx(expected * 1000 / 8000, rel=1e-6)
    assert 2.0 < stats.jitter_ms < 5.0  # uniform 0-10 ms: mean |D| is 3.3 ms


def test_round_trip_from_lsr_and_dlsr():
    # RFC 3550 figure 2's example: A = 0xb710:8000 (46864.5 s), LSR = 0xb705:2000, DLSR = 5.25 s.
    block = ReportBlock(1, 0, 0, 0, 0, 0xB705_2000, 0x0005_4000)
    assert round_trip_ms(block, 0xB710_8000 << 16) == pytest.approx(6125.0, abs=0.1)
    assert round_trip_ms(ReportBlock(1, 0, 0, 0, 0, 0, 0), 0) is None


def test_a_round_trip_just_below_zero_is_zero_and_far_below_is_refused():
    # Loopback with baresip: A - LSR = 0x156e7, DLSR = 0x1570a (its millisecond clock
    # rounded the hold up): 0.53 ms below zero, a round trip of 0 ms.
    lsr, arrival = 0x53EE_8855, 0xEEB9_53EF_DF3C_0000  # A: NTP 64-bit; its middle 32 bits 0x53ef_df3c
    block = ReportBlock(1, 0, 0, 0, 0, lsr, 0x0001_570A)
    assert round_trip_ms(block, arrival) == 0.0
    assert round_trip_ms(ReportBlock(1, 0, 0, 0, 0, lsr, 0x0001_570A + 65536 // 100), arrival) is None  # 10 ms


def test_sessions_exchange_reports_and_learn_loss_jitter_and_rtt():
    ours, theirs = RtcpSession(0x1111, 8000, "trivox", random.Random(1)), RtcpSession(0x2222, 8000, "peer")
    wall = 1_700_000_000.0
    for i in range(250):  # 5 s of our audio, every tenth packet lost on the way
        ours.on_sent(160, i * 160, i * 0.02)
        if i % 10:
            theirs.on_received(0x1111, i, i * 160, i * 0.02 + 0.030)
    ours_report = ours.report(5.0, wall + 5.0)
    assert isinstance(parse_rtcp(ours_report)[0], SenderReport)
    theirs.receive(ours_report, 5.02, wall + 5.02)  # our SR reaches them 20 ms later
    # They answer 100 ms after it arrived; their report reaches us 20 ms later.
    ours.receive(theirs.report(5.12, wall + 5.12), 5.14, wall + 5.14)
    peer = ours.peer
    assert peer.reports == 1
    assert peer.fraction_lost == pytest.approx(0.1, abs=0.01)
    assert peer.round_trip_ms == pytest.approx(40.0, abs=1.0)  # 140 ms in all, less their 100 ms hold
    assert middle32(ntp_from_unix(wall)) != 0
