"""The outgoing audio clock of one call: one 20 ms frame per tick, on time, forever.

Agent audio arrives in bursts (a TTS chunk holds seconds of speech and arrives in
milliseconds); the caller must hear it at exactly real time. The pacer queues whatever
arrives, cuts it into 20 ms frames and hands one frame per tick to a sink (RTP or
AudioSocket). Ticks sit on a fixed grid, ``start + n * 20 ms``: a late wake-up makes the
next sleep shorter instead of shifting every later tick, so the stream never drifts from
the wall clock that the peer's jitter buffer measures it against.

Barge-in is :meth:`Pacer.flush`: the queue empties at once, and :attr:`Pacer.played_ms`
says how much of the cut utterance the caller actually heard.

A server with many calls gives them one :class:`MediaClock`, whose task runs every
call's tick in turn. A timed sleep per call and tick would cost Trio a deadline, a
cancel scope and a raised and caught Cancelled, and the calls' sends would land in
random order within each scheduling batch; one task ticking them all costs a fraction
of that and keeps each call's send at the same offset in every tick.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable

import trio

from media.audio import FRAME_MS, duration_ms, frame_bytes

TICK_S = FRAME_MS / 1000
# A tick more than this many periods late is not caught up by sending a burst (which
# would overflow the peer's jitter buffer); the missed slots are skipped instead.
MAX_LAG_TICKS = 3

Sink = Callable[[bytes | None], Awaitable[None]]
#: What runs after every pacer of the clock has sent its tick's frame.
After = Callable[[], None]


class _Grid:
    """Ticks at ``start + n * 20 ms``: a late wake-up shortens the next sleep, and a stall
    of more than ``MAX_LAG_TICKS`` skips the missed ticks rather than bursting them."""

    def __init__(self) -> None:
        self._start = trio.current_time()
        self._tick = 0

    async def next(self) -> int:
        """Sleep until the next tick; returns how many were skipped on the way."""
        self._tick += 1
        behind = int((trio.current_time() - self._start) / TICK_S) - self._tick
        skipped = behind if behind > MAX_LAG_TICKS else 0
        self._tick += skipped
        await trio.sleep_until(self._start + self._tick * TICK_S)
        return skipped


class MediaClock:
    """The 20 ms grid shared by every call's pacer; :meth:`run` keeps it.

    Each tick, the clock task itself runs every member pacer's tick, one after another in
    the order they joined, and then every member's ``after`` (the receive half of an RTP
    call). That order is the same every tick, and no receive work comes between two
    sends, so each call's packets leave at a steady offset within the tick: the send
    interval stays 20 ms however many calls there are. A sink must therefore not block
    (RTP sends without waiting; AudioSocket hands its frame to the connection's writer
    task). A sink or ``after`` that raises fails only its own call: the exception is
    raised in that call's pacer task.
    """

    def __init__(self) -> None:
        self._members: dict[Pacer, tuple[Sink, After | None]] = {}
        #: Ticks given up after the process stalled (a health metric).
        self.skipped_ticks = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Tick until cancelled."""
        grid = _Grid()
        task_status.started()
        while True:
            members = list(self._members.items())
            for pacer, (sink, _) in members:
                try:
                    await pacer.tick(sink)
                except Exception as exc:
                    self._fail(pacer, exc)
            for pacer, (_, after) in members:
                try:
                    if after is not None and pacer in self._members:
                        after()
                except Exception as exc:
                    self._fail(pacer, exc)
            self.skipped_ticks += await grid.next()

    def _fail(self, pacer: Pacer, exc: Exception) -> None:
        self.leave(pacer)
        pacer.fail(exc)

    def join(self, pacer: Pacer, sink: Sink, after: After | None = None) -> None:
        self._members[pacer] = (sink, after)

    def leave(self, pacer: Pacer) -> None:
        self._members.pop(pacer, None)


class Pacer:
    """Queue of agent audio at ``rate`` Hz, drained by :meth:`run` one frame per tick.

    An *utterance* is one stretch of agent speech: :meth:`start_utterance`, any number of
    :meth:`enqueue`, then :meth:`end_utterance` (or :meth:`flush` on barge-in). Audio may
    arrive in chunks of any size, even splitting a sample; a trailing partial frame waits
    for more audio and is padded with silence only by :meth:`end_utterance`, so chunk
    borders never become gaps.
    """

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._frame_bytes = frame_bytes(rate)
        # (utterance number, frame): frames of a finished utterance may still be playing
        # when the next one starts, and must not count towards its played_ms.
        self._frames: deque[tuple[int, bytes]] = deque()
        self._partial = bytearray()
        self._utterance = 0
        self._open = False  # an utterance is being enqueued
        self._played_frames = 0
        self._idle = trio.Event()
        self._idle.set()
        # A producer waiting for the queue to fall below ``_low_mark`` ms.
        self._low_mark: int | None = None
        self._low = trio.Event()
        self.skipped_ticks = 0  # slots given up after a stall (a health metric)
        self._failure: Exception | None = None
        self._failed = trio.Event()

    @property
    def queued_ms(self) -> int:
        """Audio waiting to be played, including a partial frame not yet released."""
        return len(self._frames) * FRAME_MS + int(duration_ms(self._partial, self.rate))

    @property
    def played_ms(self) -> int:
        """Audio of the current (or last) utterance handed to the sink so far."""
        return self._played_frames * FRAME_MS

    def start_utterance(self) -> None:
        """Begin a new utterance: ``played_ms`` restarts from zero. An utterance still
        open is ended first; its frames still play, but no longer count."""
        self.end_utterance()
        self._open = True
        self._utterance += 1
        self._played_frames = 0

    def enqueue(self, pcm: bytes) -> None:
        """Append agent audio (s16le mono at ``rate``) to the current utterance, starting
        one if none is open."""
        if not self._open:
            self.start_utterance()
        self._partial += pcm
        whole = len(self._partial) - len(self._partial) % self._frame_bytes
        for offset in range(0, whole, self._frame_bytes):
            self._queue(bytes(self._partial[offset : offset + self._frame_bytes]))
        del self._partial[:whole]

    def end_utterance(self) -> None:
        """Close the utterance: its last partial frame is padded with silence and queued."""
        if self._partial:
            self._partial += bytes(self._frame_bytes - len(self._partial))
            self._queue(bytes(self._partial))
            self._partial.clear()
        self._open = False

    def flush(self) -> int:
        """Drop everything not yet played and close the utterance; return the ms dropped.

        ``played_ms`` keeps its value until the next utterance starts.
        """
        dropped = self.queued_ms
        self._frames.clear()
        self._partial.clear()
        self._open = False
        self._idle.set()
        self._low.set()
        return dropped

    async def wait_below(self, ms: int) -> None:
        """Return once less than ``ms`` of audio is queued (at once if it already is).

        A producer that stays only that far ahead of the caller (TTS, sentence by
        sentence) wastes nothing on what a barge-in throws away: no synthesis time,
        and with a cloud TTS, no paid characters.
        """
        if self.queued_ms < ms:
            return
        self._low_mark, self._low = ms, trio.Event()
        await self._low.wait()

    async def wait_idle(self) -> None:
        """Return once every queued frame has been handed to the sink.

        A partial frame is not queued yet: call :meth:`end_utterance` first.
        """
        await self._idle.wait()

    def _queue(self, frame: bytes) -> None:
        if self._idle.is_set():
            self._idle = trio.Event()  # no waiter holds the set event: safe to replace
        self._frames.append((self._utterance, frame))

    async def run(
        self, sink: Sink, clock: MediaClock | None = None, *, after: After | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Tick forever: ``await sink(frame)``, or ``sink(None)`` when nothing is queued,
        then ``after()``.

        ``None`` lets the sink choose: RTP suppresses the packet (and marks the next
        talk-spurt), AudioSocket sends silence. With a ``clock``, its task ticks this
        pacer (the sink must not block); without one, the pacer keeps its own grid.
        Cancel the task to stop.
        """
        task_status.started()
        if clock is not None:
            self._failed = trio.Event()
            clock.join(self, sink, after)
            try:
                await self._failed.wait()
                assert self._failure is not None
                raise self._failure
            finally:
                clock.leave(self)
        grid = _Grid()
        while True:
            await self.tick(sink)
            if after is not None:
                after()
            self.skipped_ticks += await grid.next()

    def fail(self, exc: Exception) -> None:
        """The clock's call of our sink raised: re-raise it in :meth:`run`'s task."""
        self._failure = exc
        self._failed.set()

    async def tick(self, sink: Sink) -> None:
        """One tick: the next frame (or None) to the sink."""
        if not self._frames:
            await sink(None)
            return
        utterance, frame = self._frames.popleft()
        if self._low_mark is not None and len(self._frames) * FRAME_MS < self._low_mark:
            self._low_mark = None
            self._low.set()
        await sink(frame)
        if utterance == self._utterance:
            self._played_frames += 1
        if not self._frames:
            self._idle.set()
