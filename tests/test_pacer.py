"""The pacer on a mock clock: ticks on the 20 ms grid, frames in order, barge-in."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from media.audio import frame_bytes, silence
from media.pacer import MAX_LAG_TICKS, TICK_S, Pacer

RATE = 8000
FRAME = frame_bytes(RATE)


def frame(n: int) -> bytes:
    """A distinguishable 20 ms frame."""
    return bytes([n]) * FRAME


class Recorder:
    """A sink that records (time, frame) and stops the pacer after ``ticks`` ticks."""

    def __init__(self, ticks: int, delay: float = 0.0) -> None:
        self.ticks = ticks
        self.delay = delay
        self.calls: list[tuple[float, bytes | None]] = []
        self.scope = trio.CancelScope()

    async def __call__(self, data: bytes | None) -> None:
        self.calls.append((trio.current_time(), data))
        if self.delay:
            await trio.sleep(self.delay)
        if len(self.calls) >= self.ticks:
            self.scope.cancel()

    @property
    def frames(self) -> list[bytes | None]:
        return [data for _, data in self.calls]

    @property
    def times(self) -> list[float]:
        return [when for when, _ in self.calls]


async def run_for(pacer: Pacer, sink: Recorder) -> float:
    """Run the pacer until the sink has seen its ticks; return the start time."""
    start = trio.current_time()
    with sink.scope:
        await pacer.run(sink)
    return start


async def test_ticks_land_on_the_20ms_grid(autojump_clock: trio.testing.MockClock) -> None:
    sink = Recorder(ticks=500)
    start = await run_for(Pacer(RATE), sink)
    for n, when in enumerate(sink.times):
        assert when == pytest.approx(start + n * TICK_S, abs=1e-9)


async def test_slow_sink_does_not_drift(autojump_clock: trio.testing.MockClock) -> None:
    # Each send takes 7 ms; a sleep(0.020) loop would drift by 7 ms a tick.
    sink = Recorder(ticks=100, delay=0.007)
    start = await run_for(Pacer(RATE), sink)
    assert sink.times[-1] == pytest.approx(start + 99 * TICK_S, abs=1e-9)


async def test_falling_far_behind_skips_instead_of_bursting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pacer = Pacer(RATE)
    stall = 0.205  # a blocked event loop: the 5th send returns ten slots late

    class Stalling(Recorder):
        async def __call__(self, data: bytes | None) -> None:
            await super().__call__(data)
            if len(self.calls) == 5:
                await trio.sleep(stall)

    sink = Stalling(ticks=20)
    start = await run_for(pacer, sink)
    times = [when - start for when in sink.times]
    # Ticks 5..13 are given up; the current slot (14) fires at once, then the grid holds.
    assert pacer.skipped_ticks == 9
    assert times[5] == pytest.approx(4 * TICK_S + stall, abs=1e-9)
    for n, when in enumerate(times[6:], start=15):
        assert when == pytest.approx(n * TICK_S, abs=1e-9)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert min(gaps) > TICK_S / 2  # no burst


async def test_small_lag_is_caught_up(autojump_clock: trio.testing.MockClock) -> None:
    pacer = Pacer(RATE)
    lag = MAX_LAG_TICKS * TICK_S  # within the limit: keep every slot, catch up

    class Lagging(Recorder):
        async def __call__(self, data: bytes | None) -> None:
            await super().__call__(data)
            if len(self.calls) == 2:
                await trio.sleep(lag)

    sink = Lagging(ticks=12)
    start = await run_for(pacer, sink)
    assert pacer.skipped_ticks == 0
    assert sink.times[-1] == pytest.approx(start + 11 * TICK_S, abs=1e-9)


async def test_frames_come_out_in_order_then_none(autojump_clock: trio.testing.MockClock) -> None:
    pacer = Pacer(RATE)
    pacer.start_utterance()
    pacer.enqueue(frame(1) + frame(2))
    pacer.enqueue(frame(3))
    pacer.end_utterance()
    sink = Recorder(ticks=5)
    await run_for(pacer, sink)
    assert sink.frames == [frame(1), frame(2), frame(3), None, None]


async def test_chunks_of_any_size_are_recut(autojump_clock: trio.testing.MockClock) -> None:
    pacer = Pacer(RATE)
    audio = b"".join(frame(n) for n in range(1, 4))
    for i in range(0, len(audio), 7):  # splits samples and frames alike
        pacer.enqueue(audio[i : i + 7])
    sink = Recorder(ticks=3)
    await run_for(pacer, sink)
    assert sink.frames == [frame(1), frame(2), frame(3)]


async def test_partial_frame_waits_for_end_of_utterance(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pacer = Pacer(RATE)
    pacer.enqueue(frame(1) + b"\x07" * 100)
    assert pacer.queued_ms == 20 + 6  # 50 samples at 8 kHz is 6.25 ms
    sink = Recorder(ticks=3)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_for, pacer, sink)
        await trio.sleep(TICK_S * 1.5)
        pacer.end_utterance()
    assert sink.frames == [frame(1), None, b"\x07" * 100 + silence(RATE)[100:]]


async def test_played_ms_counts_the_current_utterance(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pacer = Pacer(RATE)
    pacer.start_utterance()
    pacer.enqueue(frame(1) * 3)
    pacer.end_utterance()
    assert pacer.played_ms == 0
    sink = Recorder(ticks=2)
    await run_for(pacer, sink)
    assert pacer.played_ms == 40
    # The next utterance starts while the last frame of the first is still queued:
    # that frame plays, but the caller has heard nothing of the new one yet.
    pacer.start_utterance()
    pacer.enqueue(frame(2) * 2)
    assert pacer.played_ms == 0
    sink = Recorder(ticks=2)
    await run_for(pacer, sink)
    assert sink.frames == [frame(1), frame(2)]
    assert pacer.played_ms == 20


async def test_flush_is_barge_in(autojump_clock: trio.testing.MockClock) -> None:
    pacer = Pacer(RATE)
    pacer.start_utterance()
    pacer.enqueue(frame(1) * 50 + b"\x00" * 80)  # 1 s and a 5 ms tail
    sink = Recorder(ticks=1000)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_for, pacer, sink)
        await trio.sleep(10 * TICK_S + TICK_S / 2)  # eleven ticks have fired
        assert pacer.played_ms == 220
        assert pacer.queued_ms == 39 * 20 + 5
        assert pacer.flush() == 39 * 20 + 5
        assert pacer.queued_ms == 0
        await pacer.wait_idle()
        await trio.sleep(5 * TICK_S)
        assert pacer.played_ms == 220  # still what was heard, for the agent's history
        sink.scope.cancel()
    assert sink.frames[11:] == [None] * (len(sink.frames) - 11)


async def test_wait_idle_returns_after_the_last_frame(
    autojump_clock: trio.testing.MockClock,
) -> None:
    pacer = Pacer(RATE)
    await pacer.wait_idle()  # nothing queued: returns at once
    sink = Recorder(ticks=1000)
    async with trio.open_nursery() as nursery:
        await nursery.start(pacer.run, sink)
        start = trio.current_time()
        pacer.start_utterance()
        pacer.enqueue(frame(1) * 10)
        pacer.end_utterance()
        await pacer.wait_idle()
        # The tenth frame went out on the tenth tick after the start.
        assert trio.current_time() - start == pytest.approx(10 * TICK_S, abs=1e-9)
        assert sink.frames.count(frame(1)) == 10
        assert pacer.played_ms == 200
        nursery.cancel_scope.cancel()


async def test_empty_utterance_is_idle(autojump_clock: trio.testing.MockClock) -> None:
    pacer = Pacer(RATE)
    pacer.start_utterance()
    pacer.end_utterance()
    with trio.fail_after(1):
        await pacer.wait_idle()
    assert pacer.played_ms == 0
    assert pacer.flush() == 0


async def test_wait_below_returns_when_the_queue_has_drained_to_the_mark(autojump_clock) -> None:
    pacer = Pacer(RATE)
    sink = Recorder(ticks=1000)
    pacer.enqueue(b"".join(frame(n) for n in range(100)))  # 2 s
    seen: list[tuple[int, int]] = []

    async def producer() -> None:
        await pacer.wait_below(500)
        seen.append((pacer.queued_ms, len(sink.calls)))
        await pacer.wait_below(5000)  # already below: at once
        seen.append((pacer.queued_ms, len(sink.calls)))
        sink.scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(producer)
        await run_for(pacer, sink)
    # 2000 ms queued, released once under 500 ms: after 76 frames were handed over.
    assert seen == [(480, 76), (480, 76)]


async def test_a_flush_releases_a_producer_waiting_for_room(autojump_clock) -> None:
    pacer = Pacer(RATE)
    pacer.enqueue(silence(RATE) * 50)
    released = trio.Event()

    async def producer() -> None:
        await pacer.wait_below(100)
        released.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(producer)
        await trio.sleep(1)  # no pacer runs: nothing drains
        assert not released.is_set()
        pacer.flush()
        await released.wait()
