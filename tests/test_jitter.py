"""The adaptive jitter buffer, driven by simulated networks on a simulated clock.

Each test sends a stream of 20 ms packets (L16 at 16 kHz, so decoding is exact), each
packet's samples all equal to a tag that names it, through a network model (delay,
jitter, loss, duplication, reordering) and pops the buffer every 20 ms. A played frame
is "real" when its last 100 samples are one packet's tag (concealment fades and
cross-fades never are), which is how order, completeness and delay are checked.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.codecs import G722_CODEC, L16_CODEC, PCMU
from media.jitter import TRANSIT_WINDOW, JitterBuffer, TransitWindow
from media.rtp import SEQ_MOD, TS_MOD, RtpPacket

FRAME = 0.020
SAMPLES = 320  # 20 ms at 16 kHz
TAG_BASE = 1000


def tag(i: int) -> int:
    return TAG_BASE + i % 20000


def payload(i: int, samples: int = SAMPLES) -> bytes:
    return np.full(samples, tag(i), dtype=">i2").tobytes()


@dataclass
class Sent:
    index: int
    packet: RtpPacket
    send_time: float
    arrival: float | None  # None: lost on the way


@dataclass
class Run:
    buffer: JitterBuffer
    sent: list[Sent]
    played: list[tuple[float, bytes | None]] = field(default_factory=list)

    def real(self) -> list[tuple[float, int]]:
        """(pop time, packet index) of every frame that is one packet's audio."""
        by_tag = {tag(s.index): s.index for s in self.sent}
        out = []
        for when, frame in self.played:
            if frame is None:
                continue
            samples = np.frombuffer(frame, dtype="<i2")
            if np.all(samples[-100:] == samples[-1]) and int(samples[-1]) in by_tag:
                out.append((when, by_tag[int(samples[-1])]))
        return out

    def delays(self, after: float = 0.0) -> list[float]:
        send = {s.index: s.send_time for s in self.sent}
        return [when - send[index] for when, index in self.real() if when >= after]


def stream(count: int, *, seq0: int = 1000, ts0: int = 50_000, ssrc: int = 0x1234,
           start: int = 0) -> list[RtpPacket]:
    return [RtpPacket(payload_type=96, sequence=(seq0 + i) % SEQ_MOD, timestamp=(ts0 + i * SAMPLES) % TS_MOD,
                      ssrc=ssrc, payload=payload(start + i)) for i in range(count)]


def simulate(packets: list[RtpPacket], *, delay: float = 0.010, jitter=lambda i: 0.0, lose=lambda i: False,
             duplicate=lambda i: False, phase: float = 0.007, extra_ticks: int = 20, send_times=None,
             **buffer_args) -> Run:
    buffer = JitterBuffer(L16_CODEC, **buffer_args)
    sent, arrivals = [], []
    for i, packet in enumerate(packets):
        send_time = send_times[i] if send_times else i * FRAME
        arrival = None if lose(i) else send_time + delay + jitter(i)
        sent.append(Sent(i, packet, send_time, arrival))
        if arrival is not None:
            arrivals.append((arrival, i, packet))
            if duplicate(i):
                arrivals.append((arrival + 0.001, i, packet))
    arrivals.sort(key=lambda a: (a[0], a[1]))
    run = Run(buffer, sent)
    end = max(s.send_time for s in sent) + extra_ticks * FRAME + 1.0
    tick, position = 0, 0
    while (now := tick * FRAME + phase) < end:
        while position < len(arrivals) and arrivals[position][0] <= now:
            buffer.push(arrivals[position][2], arrivals[position][0])
            position += 1
        run.played.append((now, buffer.pop()))
        tick += 1
    return run


def assert_in_order(run: Run) -> list[int]:
    indices = [index for _, index in run.real()]
    assert indices == sorted(set(indices)), "frames played out of order or twice"
    return indices


def test_nothing_to_play_before_the_first_packet() -> None:
    assert JitterBuffer(L16_CODEC).pop() is None


def test_clean_network_plays_everything_in_order_at_low_delay() -> None:
    run = simulate(stream(250))
    indices = assert_in_order(run)
    assert indices == list(range(250))
    stats = run.buffer.stats
    assert (stats.lost, stats.late, stats.duplicates, stats.expanded, stats.shrunk) == (0, 0, 0, 0, 0)
    # The end of the stream is an underrun like any other: 60 ms of fading concealment.
    assert stats.concealed == 3
    assert [frame is None for _, frame in run.played[-40:]] == [True] * 40
    # One-way delay 10 ms, plus the tick phase, plus at most the minimum target.
    assert max(run.delays()) <= 0.010 + 0.020 + 0.040


@pytest.mark.parametrize("seed", range(4))
def test_jitter_up_to_100_ms_is_absorbed(seed: int) -> None:
    rng = random.Random(seed)
    jitters = [rng.uniform(0.0, 0.100) for _ in range(1500)]  # 30 s
    run = simulate(stream(1500), jitter=lambda i: jitters[i])
    indices = assert_in_order(run)
    stats = run.buffer.stats
    # The target follows the measured spread (~95 ms at the 95th percentile) plus a frame.
    assert 90 <= stats.target_ms <= 140
    # After the buffer has grown (a few seconds), nearly nothing is late any more.
    late_after_warmup = [i for i in range(500, 1500) if i not in set(indices)]
    assert len(late_after_warmup) <= 0.03 * 1000 + run.buffer.stats.shrunk
    # Bounded added delay: no frame waits much longer than the worst jitter needs.
    assert max(run.delays(after=10.0)) <= 0.010 + 0.100 + 0.080


def test_buffer_shrinks_back_when_jitter_falls() -> None:
    rng = random.Random(7)
    jitters = [rng.uniform(0.0, 0.100) if i < 500 else 0.0 for i in range(2000)]  # 10 s rough, 30 s calm
    run = simulate(stream(2000), jitter=lambda i: jitters[i])
    assert_in_order(run)
    assert run.buffer.stats.target_ms <= 40
    assert run.buffer.stats.shrunk >= 2
    assert max(run.delays(after=35.0)) <= 0.010 + 0.020 + 0.060


@pytest.mark.parametrize("seed", range(3))
def test_random_loss_is_counted_and_concealed(seed: int) -> None:
    rng = random.Random(seed)
    lost = {i for i in range(1, 499) if rng.random() < 0.05}
    run = simulate(stream(500), lose=lambda i: i in lost)
    indices = assert_in_order(run)
    # A loss with nothing buffered behind it looks like a late packet: the buffer waits
    # a frame (concealing), and later drops one frame to get back to its target.
    assert not set(indices) & lost
    assert len(set(range(500)) - lost - set(indices)) <= run.buffer.stats.shrunk
    assert run.buffer.stats.lost == len(lost)
    assert run.buffer.stats.concealed >= len(lost)
    # No tick inside the stream is a hole of silence: every loss was concealed.
    first = next(k for k, (_, frame) in enumerate(run.played) if frame is not None)
    last = max(k for k, (_, frame) in enumerate(run.played) if frame is not None)
    assert all(frame is not None for _, frame in run.played[first:last + 1])


def test_burst_loss_is_concealed_then_faded_and_recovered() -> None:
    burst = set(range(100, 110))  # 200 ms gone
    run = simulate(stream(300), lose=lambda i: i in burst)
    indices = assert_in_order(run)
    assert set(indices) == set(range(300)) - burst
    assert run.buffer.stats.lost == len(burst)
    # The concealment fades out (G.711 Appendix I: silent by 60 ms) rather than buzzing.
    gap = [frame for when, frame in run.played if 100 * FRAME + 0.12 < when < 109 * FRAME]
    assert gap and all(frame is None or not any(frame) for frame in gap)


def test_reordering_and_duplicates_lose_nothing() -> None:
    rng = random.Random(3)
    # Every packet is delayed 0-60 ms independently: neighbours swap places often.
    jitters = [rng.uniform(0.0, 0.060) for _ in range(750)]
    run = simulate(stream(750), jitter=lambda i: jitters[i], duplicate=lambda i: i % 7 == 0,
                   min_delay_ms=100)
    indices = assert_in_order(run)
    stats = run.buffer.stats
    assert stats.reordered > 50
    assert stats.duplicates == len(range(0, 750, 7))
    assert stats.lost == stats.late == 0
    assert set(indices) >= set(range(750)) - set(range(745, 750))


def test_sequence_and_timestamp_wrap_around() -> None:
    packets = stream(300, seq0=SEQ_MOD - 150, ts0=TS_MOD - 150 * SAMPLES)
    run = simulate(packets, jitter=lambda i: 0.015 * (i % 3))
    assert assert_in_order(run) == list(range(300))
    assert run.buffer.stats.lost == run.buffer.stats.restarts == 0


def test_timestamp_jump_with_running_sequence_is_rebased() -> None:
    packets = stream(100) + stream(100, seq0=1100, ts0=3_000_000_000, start=100)
    run = simulate(packets)
    assert assert_in_order(run) == list(range(200))
    assert run.buffer.stats.lost == 0
    assert run.buffer.stats.concealed == 3  # only the fade after the last packet


def test_talk_spurt_after_silence_is_re_anchored_at_the_target() -> None:
    # Silence suppression: 3 s without packets, the sequence runs on, the clock moves.
    first = stream(100)
    second = stream(100, seq0=1100, ts0=50_000 + 250 * SAMPLES, start=100)
    times = [i * FRAME for i in range(100)] + [(250 + i) * FRAME for i in range(100)]
    run = simulate(first + second, send_times=times)
    assert assert_in_order(run) == list(range(200))
    assert run.buffer.stats.lost == 0
    # The second spurt is played at the same small delay as the first, not 3 s late.
    delays = run.delays()
    assert max(delays) <= 0.070
    # Between the spurts the buffer played nothing rather than invent 3 s of audio.
    silent = [frame for when, frame in run.played if 2.3 < when < 4.9]
    assert silent and all(frame is None for frame in silent)


def test_new_ssrc_restarts_the_stream() -> None:
    packets = stream(100) + stream(100, seq0=7, ts0=999, ssrc=0x9999, start=100)
    run = simulate(packets)
    assert assert_in_order(run) == list(range(200))
    assert run.buffer.stats.restarts == 1
    assert run.buffer.stats.lost == 0


def test_a_stray_far_packet_is_ignored_and_a_confirmed_jump_restarts() -> None:
    stray = RtpPacket(payload_type=96, sequence=30_000, timestamp=1, ssrc=0x1234, payload=payload(9999))
    packets = stream(50) + [stray] + stream(50, seq0=1050, ts0=50_000 + 50 * SAMPLES, start=51)
    run = simulate(packets)
    assert assert_in_order(run) == list(range(50)) + list(range(51, 101))
    assert run.buffer.stats.restarts == 0

    jumped = stream(50) + stream(50, seq0=40_000, ts0=7, start=50)
    run = simulate(jumped)
    indices = assert_in_order(run)
    assert run.buffer.stats.restarts == 1
    assert indices[-1] == 99 and len(indices) >= 98  # the probe packet is replayed after the restart


def test_30_ms_packets_play_out_as_20_ms_frames() -> None:
    ramp = np.arange(480 * 200) % 30000
    packets = [RtpPacket(payload_type=96, sequence=i, timestamp=i * 480, ssrc=1,
                         payload=ramp[i * 480:(i + 1) * 480].astype(">i2").tobytes()) for i in range(200)]
    buffer = JitterBuffer(L16_CODEC)
    out = []
    for tick in range(400):
        now = tick * FRAME
        for i in range(200):
            if i * 0.030 + 0.005 <= now < i * 0.030 + 0.005 + FRAME:
                buffer.push(packets[i], i * 0.030 + 0.005)
        frame = buffer.pop()
        if frame is not None:
            out.append(np.frombuffer(frame, dtype="<i2"))
    played = np.concatenate(out)
    assert len(played) >= 480 * 199
    assert np.array_equal(played[:480 * 199], ramp[:480 * 199])  # every sample, in order
    assert buffer.stats.lost == 0
    assert buffer.stats.concealed == 3  # only the fade after the last packet


@pytest.mark.parametrize("codec", [PCMU, G722_CODEC], ids=lambda c: c.name)
def test_frames_are_20_ms_of_the_codec_sample_rate(codec) -> None:
    transcoder = codec.transcoder()
    samples = codec.sample_rate // 50
    pcm = (np.sin(np.arange(samples * 50) * 2 * np.pi * 440 / codec.sample_rate) * 8000).astype("<i2")
    buffer = JitterBuffer(codec)
    frames = []
    for i in range(50):
        chunk = pcm[i * samples:(i + 1) * samples].tobytes()
        buffer.push(RtpPacket(payload_type=codec.payload_type, sequence=i, timestamp=i * 160, ssrc=5,
                              payload=transcoder.encode(chunk)), i * FRAME)
        frame = buffer.pop()
        if frame is not None:
            frames.append(frame)
    assert frames and {len(frame) for frame in frames} == {samples * 2}
    assert buffer.stats.concealed == 0


def test_delay_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="not in order"):
        JitterBuffer(L16_CODEC, min_delay_ms=200, max_delay_ms=100)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), loss=st.floats(0.0, 0.2), spread=st.floats(0.0, 0.1),
       seq0=st.integers(0, SEQ_MOD - 1), ts0=st.integers(0, TS_MOD - 1))
def test_any_network_keeps_order_and_counts_every_packet(seed: int, loss: float, spread: float,
                                                         seq0: int, ts0: int) -> None:
    rng = random.Random(seed)
    count = 200
    lost = {i for i in range(count) if rng.random() < loss}
    jitters = [rng.uniform(0.0, spread) for _ in range(count)]
    run = simulate(stream(count, seq0=seq0, ts0=ts0), lose=lambda i: i in lost, jitter=lambda i: jitters[i])
    indices = assert_in_order(run)
    stats = run.buffer.stats
    assert stats.received == count - len(lost)
    # Every packet sent is either played, lost on the way, late, or cut by a shrink,
    # or in a burst at the very end that nothing after it reveals as lost.
    played, missing = set(indices), set(range(count)) - set(indices)
    assert missing >= lost - {i for i in lost if i > max(played, default=-1)}
    assert len(missing - lost) <= stats.late + 2 * stats.shrunk
    assert stats.restarts == 0


@given(st.lists(st.floats(-1e6, 1e6), min_size=2, max_size=600), st.sampled_from([0.0, 50.0, 95.0, 100.0]))
def test_transit_spread_is_numpys_percentile_over_the_window(values, quantile) -> None:
    window = TransitWindow()
    for value in values:
        window.add(value)
    last = np.array(values[-TRANSIT_WINDOW:])
    assert len(window) == len(last)
    expected = float(np.percentile(last, quantile)) - float(last.min())
    assert window.spread(quantile) == pytest.approx(expected, rel=1e-9, abs=1e-6)
