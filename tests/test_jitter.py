"""The fixed-depth jitter buffer, driven with plain packets and explicit pop ticks."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from media.jitter import JitterBuffer, JitterStats
from media.rtp import RtpPacket

SSRC = 0x1234


def pkt(seq: int, ssrc: int = SSRC) -> RtpPacket:
    seq %= 65536
    return RtpPacket(0, seq, (seq * 160) % 2**32, ssrc, bytes([seq % 256]) * 160)


def seqs(popped: list[RtpPacket | None]) -> list[int | None]:
    return [None if p is None else p.sequence for p in popped]


def drain(buffer: JitterBuffer, ticks: int) -> list[int | None]:
    return seqs([buffer.pop() for _ in range(ticks)])


def test_startup_waits_for_depth_packets() -> None:
    buffer = JitterBuffer(depth=3)
    assert buffer.pop() is None  # nothing yet
    buffer.push(pkt(10))
    assert buffer.pop() is None
    buffer.push(pkt(11))
    assert buffer.pop() is None
    buffer.push(pkt(12))
    assert drain(buffer, 3) == [10, 11, 12]
    assert buffer.stats == JitterStats(received=3)


def test_steady_stream_keeps_its_depth() -> None:
    buffer = JitterBuffer(depth=3)
    for seq in range(3):
        buffer.push(pkt(seq))
    played = []
    for seq in range(3, 100):
        played.append(buffer.pop())
        buffer.push(pkt(seq))
        assert len(buffer) == 3
    assert seqs(played) == list(range(97))
    assert buffer.stats.lost == buffer.stats.late == 0


def test_reordered_packets_come_out_in_order() -> None:
    buffer = JitterBuffer(depth=3)
    for seq in (1, 0, 3, 2, 4):
        buffer.push(pkt(seq))
    assert drain(buffer, 5) == [0, 1, 2, 3, 4]
    assert buffer.stats.reordered == 2


def test_reordering_at_startup_moves_the_start_back() -> None:
    buffer = JitterBuffer(depth=3)
    for seq in (7, 5, 6):
        buffer.push(pkt(seq))
    assert drain(buffer, 3) == [5, 6, 7]
    assert buffer.stats.lost == 0


def test_duplicates_are_dropped_and_counted() -> None:
    buffer = JitterBuffer(depth=2)
    for seq in (0, 0, 1, 1, 1):
        buffer.push(pkt(seq))
    assert drain(buffer, 3) == [0, 1, None]
    assert buffer.stats.duplicates == 3
    assert buffer.stats.received == 5


def test_a_lost_packet_is_a_none_tick() -> None:
    buffer = JitterBuffer(depth=3)
    for seq in (0, 1, 3, 4):
        buffer.push(pkt(seq))
    assert drain(buffer, 5) == [0, 1, None, 3, 4]
    assert buffer.stats.lost == 1


def test_late_packet_is_dropped() -> None:
    buffer = JitterBuffer(depth=2)
    for seq in (0, 1, 3):
        buffer.push(pkt(seq))
    assert drain(buffer, 3) == [0, 1, None]  # 2 is given up as lost
    buffer.push(pkt(2))  # ...and arrives after its turn
    buffer.push(pkt(1))  # a duplicate of a played packet is late too
    assert drain(buffer, 1) == [3]
    assert buffer.stats.late == 2
    assert buffer.stats.lost == 1


def test_wrap_around_at_65535() -> None:
    buffer = JitterBuffer(depth=3)
    for seq in (65534, 65535, 1, 0, 3, 2):
        buffer.push(pkt(seq))
    assert drain(buffer, 6) == [65534, 65535, 0, 1, 2, 3]
    buffer.push(pkt(65535))
    assert buffer.stats.late == 1
    assert buffer.stats.lost == 0


def test_startup_across_the_wrap() -> None:
    buffer = JitterBuffer(depth=3)
    for seq in (0, 65535, 1):
        buffer.push(pkt(seq))
    assert drain(buffer, 3) == [65535, 0, 1]


def test_underrun_rebuffers_without_counting_loss() -> None:
    # A sender with silence suppression stops sending; its next talk-spurt continues
    # the sequence numbers and must not be thrown away as late.
    buffer = JitterBuffer(depth=2)
    for seq in (0, 1):
        buffer.push(pkt(seq))
    assert drain(buffer, 5) == [0, 1, None, None, None]
    buffer.push(pkt(2))
    assert drain(buffer, 1) == [None]  # refilling to depth
    buffer.push(pkt(3))
    assert drain(buffer, 2) == [2, 3]
    assert buffer.stats == JitterStats(received=4)


def test_short_talk_spurt_plays_after_depth_ticks() -> None:
    buffer = JitterBuffer(depth=3)
    buffer.push(pkt(0))
    assert drain(buffer, 4) == [None, None, 0, None]
    assert buffer.stats == JitterStats(received=1)


def test_resume_after_underrun_skips_a_lost_head() -> None:
    buffer = JitterBuffer(depth=2)
    for seq in (0, 1):
        buffer.push(pkt(seq))
    drain(buffer, 3)
    for seq in (3, 4):  # 2 never arrives
        buffer.push(pkt(seq))
    assert drain(buffer, 2) == [3, 4]
    assert buffer.stats.lost == 1


def test_ssrc_change_restarts() -> None:
    buffer = JitterBuffer(depth=2)
    for seq in (100, 101, 102):
        buffer.push(pkt(seq))
    assert drain(buffer, 1) == [100]
    buffer.push(pkt(5000, ssrc=99))
    assert buffer.pop() is None  # old stream gone, new one buffering
    buffer.push(pkt(5001, ssrc=99))
    assert seqs([buffer.pop(), buffer.pop()]) == [5000, 5001]
    assert buffer.stats.late == buffer.stats.lost == 0


def test_big_jump_restarts_once_confirmed() -> None:
    buffer = JitterBuffer(depth=2, max_frames=50)
    for seq in (0, 1):
        buffer.push(pkt(seq))
    assert drain(buffer, 2) == [0, 1]
    buffer.push(pkt(30000))  # a restarted stream, or a stray: not yet believed
    assert len(buffer) == 0
    buffer.push(pkt(30001))  # its successor confirms the restart (RFC 3550 A.1)
    assert drain(buffer, 3) == [30000, 30001, None]
    assert buffer.stats.lost == 0


def test_stray_far_packet_is_ignored() -> None:
    buffer = JitterBuffer(depth=2, max_frames=50)
    for seq in (0, 1, 2):
        buffer.push(pkt(seq))
    buffer.push(pkt(40000))
    buffer.push(pkt(3))
    assert drain(buffer, 4) == [0, 1, 2, 3]


def test_jump_backwards_restarts_too() -> None:
    buffer = JitterBuffer(depth=1, max_frames=10)
    for seq in (1000, 1001):
        buffer.push(pkt(seq))
    assert drain(buffer, 2) == [1000, 1001]
    buffer.push(pkt(5))
    buffer.push(pkt(6))
    assert drain(buffer, 2) == [5, 6]


def test_jump_within_max_frames_is_loss() -> None:
    buffer = JitterBuffer(depth=1, max_frames=10)
    buffer.push(pkt(0))
    assert drain(buffer, 1) == [0]
    buffer.push(pkt(5))
    buffer.push(pkt(6))
    assert drain(buffer, 6) == [None, None, None, None, 5, 6]
    assert buffer.stats.lost == 4


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="depth"):
        JitterBuffer(depth=0)
    with pytest.raises(ValueError, match="max_frames"):
        JitterBuffer(depth=5, max_frames=4)


@given(
    start=st.integers(0, 65535),
    count=st.integers(3, 200),
    seed=st.integers(0, 2**32),
    spread=st.integers(0, 3),
)
def test_bounded_reordering_loses_nothing(start: int, count: int, seed: int, spread: int) -> None:
    # Each packet is delayed by up to `spread` ticks; a buffer deeper than that plays
    # every packet in order, across the 16-bit wrap.
    rng = random.Random(seed)
    arrivals: dict[int, list[int]] = {}
    for i in range(count):
        arrivals.setdefault(i + rng.randint(0, spread), []).append(i)
    buffer = JitterBuffer(depth=spread + 1)
    played: list[int | None] = []
    for tick in range(count + 2 * spread + 2):
        for i in arrivals.get(tick, []):
            buffer.push(pkt(start + i))
        played.append(None if (p := buffer.pop()) is None else p.sequence)
    assert [s for s in played if s is not None] == [(start + i) % 65536 for i in range(count)]
    assert buffer.stats.lost == buffer.stats.late == 0
