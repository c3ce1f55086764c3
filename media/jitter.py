"""An adaptive jitter buffer: RTP packets in as they arrive, 20 ms of audio out per tick.

The network delivers packets late, early, twice or not at all; the playout side wants
exactly one frame every 20 ms. The buffer holds enough delay to absorb the jitter it
measures, and no more, because every millisecond here is a millisecond the caller waits
for the agent. The design follows the common ground of PJSIP's jbuf, Asterisk's
adaptive jitterbuf and WebRTC's NetEq:

- **Timestamp-driven.** Packets are placed on the RTP timestamp axis (unwrapped past
  2^32) and played out sample by sample, so any packet time works (10, 20, 30, 60 ms)
  and a packet may straddle two output frames. Decoding happens at playout, in order,
  which stateful codecs (G.722's ADPCM) need.
- **Target delay from measured jitter.** Each packet's transit (arrival on the RTP clock
  minus its timestamp) goes into a window of the last few seconds; the target is the
  spread between its fastest and its 95th-percentile packet, plus one frame for the
  phase between arrival and our tick, kept within ``[min_delay_ms, max_delay_ms]``.
- **Adapting without clicks.** Talk-spurt starts (a sender's silence suppression, a
  timestamp jump) re-anchor playout at the target delay, where a change is inaudible.
  Inside a spurt, the buffer's delay is how long a packet on the fastest path waits for
  its playout. Every half second, the least delay of the period is compared with the
  target: for each whole frame too much, one frame is dropped (a quiet one, or any once
  a quarter second has passed without one, cross-faded into the next); for each whole
  frame too little, a concealment frame is inserted; at most three either way.
- **Loss.** A hole between packets (a gap in the sequence numbers) is concealed by
  :class:`media.plc.Concealer`: pitch repetition fading out, never a click of silence.
  A packet whose time has passed is late: dropped and counted. Nothing buffered at all
  is an underrun: concealment runs until it has faded, then playout stops and restarts
  at the target delay when packets return.
- **Sources.** A new SSRC is a new stream (RFC 3550 section 8): the buffer restarts.
  A sequence number far from the stream's is believed only when its successor follows
  (RFC 3550 Appendix A.1); a timestamp that jumps while the sequence runs on is rebased.

Sans-IO: :meth:`JitterBuffer.push` takes the arrival time, :meth:`JitterBuffer.pop` is
driven by the caller's 20 ms clock; nothing here reads the time.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from media.audio import FRAME_MS, frame_samples
from media.codecs import Codec, Transcoder
from media.plc import Concealer
from media.rtp import SEQ_MOD, TS_MOD, RtpPacket, seq_delta

DEFAULT_MIN_DELAY_MS = 20
DEFAULT_MAX_DELAY_MS = 300
#: Packets whose transit times the target delay is computed from (~5 s at 20 ms).
TRANSIT_WINDOW = 250
#: Share of packets the target delay must hold in time (NetEq aims at 95%).
TRANSIT_QUANTILE = 95.0
#: Pops between recomputing the target and judging the buffer's delay (half a second).
ADAPT_TICKS = 25
#: Most frames inserted or dropped per adaptation period.
MAX_STEP_FRAMES = 3
#: RFC 3550 Appendix A.1: sequence jumps beyond these are a restart, not jitter.
MAX_DROPOUT = 3000
MAX_MISORDER = 100
#: A timestamp moving further than this while the sequence runs on is a jump, not silence.
MAX_SILENCE_S = 60
#: Frames at or below this RMS may be dropped at once when the buffer is too deep.
QUIET_RMS = 300.0


@dataclass
class JitterStats:
    """One stream's playout counters (they survive source restarts).

    ``lost`` counts packets missing from the sequence at playout (late ones included);
    ``late`` those that arrived after their time; ``concealed`` frames of 20 ms that held
    invented audio; ``expanded``/``shrunk`` frames inserted or dropped to follow the
    target. ``delay_ms`` is the buffer's delay as the last packet saw it: how long a
    packet on the fastest path waits between arrival and playout.
    """

    received: int = 0
    duplicates: int = 0
    late: int = 0
    lost: int = 0
    reordered: int = 0
    concealed: int = 0
    expanded: int = 0
    shrunk: int = 0
    restarts: int = 0
    delay_ms: float = 0.0
    target_ms: float = 0.0


class TransitWindow:
    """The transit times (arrival on the RTP clock minus timestamp) of the last packets.

    Their spread is the jitter the buffer must hold; their floor is the path of the
    fastest packet, against which the buffer's own delay is measured. The floor is a
    sliding-window minimum (a monotonic deque), so each packet costs O(1).
    """

    def __init__(self, size: int = TRANSIT_WINDOW) -> None:
        # A ring of the last ``size`` values: the quantile partitions it in place, which
        # costs a few microseconds where building an array from a deque and sorting it
        # cost tens, at every adaptation of every call.
        self._values = np.zeros(size, dtype=np.float64)
        self._floor: deque[tuple[int, float]] = deque()  # (index, value), values increasing
        self._count = 0
        self._size = size

    def __len__(self) -> int:
        return min(self._count, self._size)

    def clear(self) -> None:
        self._count = 0
        self._floor.clear()

    def add(self, transit: float) -> None:
        self._values[self._count % self._size] = transit
        while self._floor and self._floor[-1][1] >= transit:
            self._floor.pop()
        self._floor.append((self._count, transit))
        if self._floor[0][0] <= self._count - self._size:
            self._floor.popleft()
        self._count += 1

    @property
    def floor(self) -> float:
        """The fastest packet's transit in the window."""
        return self._floor[0][1]

    def spread(self, quantile: float) -> float:
        """How much later than the fastest the ``quantile`` percent packet came (the
        quantile interpolated between neighbours, as numpy.percentile does)."""
        values = self._values[:len(self)].copy()
        position = quantile / 100 * (len(values) - 1)
        low = int(position)
        high = min(low + 1, len(values) - 1)
        values.partition((low, high))
        value = values[low] + (values[high] - values[low]) * (position - low)
        return float(value) - self.floor


class JitterBuffer:
    """Reorders, times and decodes one RTP stream of one codec."""

    def __init__(self, codec: Codec, *, min_delay_ms: int = DEFAULT_MIN_DELAY_MS,
                 max_delay_ms: int = DEFAULT_MAX_DELAY_MS) -> None:
        if not 0 <= min_delay_ms <= max_delay_ms:
            raise ValueError(f"jitter delay bounds {min_delay_ms}..{max_delay_ms} ms are not in order")
        self.codec = codec
        self.stats = JitterStats(target_ms=float(max(min_delay_ms, FRAME_MS)))
        self.min_delay_ms = min_delay_ms
        self.max_delay_ms = max_delay_ms
        self._decoders: dict[int, Transcoder] = {}  # by payload type: decoding is stateful
        self._frame = frame_samples(codec.sample_rate)
        self._per_unit = codec.sample_rate // codec.clock_rate  # samples per timestamp unit
        self._frame_units = self._frame // self._per_unit
        self._units_per_ms = codec.clock_rate / 1000
        self._concealer = Concealer(codec.sample_rate)
        self._transits = TransitWindow()
        self._ticks = 0
        self._restart()

    def _restart(self) -> None:
        """Forget the stream (a new source). The target delay is kept; the transit times
        are not, since a new source's timestamps have another origin."""
        self._transits.clear()
        self._decoders.clear()
        self._packets: dict[int, RtpPacket] = {}  # unwrapped timestamp -> packet
        self._ssrc: int | None = None
        self._ref_raw = 0  # (raw, unwrapped) timestamp of the newest packet: the unwrap anchor
        self._ref_ext = 0
        self._newest_seq: int | None = None
        self._newest_end = 0  # unwrapped end of the newest packet
        self._probe: RtpPacket | None = None
        self._playing = False
        self._play = 0  # unwrapped timestamp of the next sample to play
        self._tail = np.zeros(0, dtype=np.int16)  # decoded samples from _play on
        self._last_seq: int | None = None  # sequence number of the last packet played
        self._waited = 0  # ticks spent buffering with packets held
        self._lowest_lag = np.inf  # least buffer delay seen this adaptation period (ms)
        self._expand = 0  # frames to insert
        self._shrink = 0  # frames to drop
        self._shrink_waited = 0  # ticks a due drop has waited for a quiet frame

    def change_codec(self, codec: Codec) -> None:
        """The stream moved to another codec of the same rates (PCMU <-> PCMA, by a
        re-INVITE). Packets of the new payload type get its decoder; those of the old
        one still buffered keep theirs."""
        self.codec = codec

    def _decoder(self, payload_type: int) -> Transcoder:
        decoder = self._decoders.get(payload_type)
        if decoder is None:
            decoder = self._decoders[payload_type] = self.codec.transcoder()
        return decoder

    # --- in ------------------------------------------------------------------------

    def push(self, packet: RtpPacket, arrival: float) -> None:
        """Take one packet, in whatever order it came; ``arrival`` in seconds, any epoch."""
        self.stats.received += 1
        if self._ssrc is not None and packet.ssrc != self._ssrc:
            self.stats.restarts += 1
            self._restart()
        if self._newest_seq is not None:
            delta = seq_delta(packet.sequence, self._newest_seq)
            if not -MAX_MISORDER <= delta <= MAX_DROPOUT:
                self._jump(packet, arrival)
                return
        self._admit(packet, arrival)

    def _jump(self, packet: RtpPacket, arrival: float) -> None:
        """RFC 3550 Appendix A.1: a far sequence number is a restart only if its successor
        follows; a lone one is a stray and is dropped."""
        probe = self._probe
        if probe is not None and packet.sequence == (probe.sequence + 1) % SEQ_MOD:
            self.stats.restarts += 1
            self._restart()
            self._admit(probe, arrival)
            self._admit(packet, arrival)
        else:
            self._probe = packet

    def _admit(self, packet: RtpPacket, arrival: float) -> None:
        units = self.codec.units(packet.payload)
        if self._ssrc is None:
            self._ssrc = packet.ssrc
            self._ref_raw, self._ref_ext = packet.timestamp, 0
        ext = self._unwrap(packet)
        if ext in self._packets:
            self.stats.duplicates += 1
            return
        if self._playing and ext + units <= self._play:
            self.stats.late += 1
            return
        if self._newest_seq is not None and seq_delta(packet.sequence, self._newest_seq) < 0:
            self.stats.reordered += 1
        else:
            self._newest_seq = packet.sequence
            self._ref_raw, self._ref_ext = packet.timestamp, ext
            self._newest_end = max(self._newest_end, ext + units)
        self._packets[ext] = packet
        self._transits.add(arrival * self.codec.clock_rate - ext)
        if self._playing:
            self._note_lag(arrival)

    def _unwrap(self, packet: RtpPacket) -> int:
        """The packet's timestamp on our unbounded axis; a jump while the sequence runs
        on (a sender that reset its clock) is rebased to follow the newest packet."""
        delta = (packet.timestamp - self._ref_raw + TS_MOD // 2) % TS_MOD - TS_MOD // 2
        if self._newest_seq is not None and seq_delta(packet.sequence, self._newest_seq) == 1:
            if not -self._frame_units <= delta <= MAX_SILENCE_S * self.codec.clock_rate:
                self._ref_raw, self._ref_ext = packet.timestamp, self._newest_end
                self._transits.clear()  # the transit times' origin moved with the clock
                return self._newest_end
        return self._ref_ext + delta

    # --- out -----------------------------------------------------------------------

    def pop(self) -> bytes | None:
        """The next 20 ms of audio (s16le at the codec's sample rate), or None while
        nothing is playing (before the first packet, and between talk-spurts)."""
        self._ticks += 1
        if self._ticks % ADAPT_TICKS == 0:
            self._adapt()
        if not self._playing and not self._start():
            self.stats.delay_ms = 0.0
            return None
        fast = self._next_whole_frame()
        if fast is not None:
            return fast
        if self._expand and self._packets:
            self._expand -= 1
            self.stats.expanded += 1
            frame: np.ndarray | None = self._concealed(self._frame)
        else:
            frame = self._take()
            if frame is not None and self._shrink_now(frame):
                following = self._take()
                if following is not None:
                    self.stats.shrunk += 1
                    frame = _crossfade(frame, following)
        return None if frame is None else frame.astype("<i2", copy=False).tobytes()

    def _next_whole_frame(self) -> bytes | None:
        """The common case, without numpy: the packet at the play position is exactly one
        frame, nothing is left over, concealed or due to be inserted or dropped."""
        if self._expand or self._shrink or len(self._tail) or self._concealer.concealing:
            return None
        packet = self._packets.get(self._play)
        if packet is None:
            return None
        pcm = self._decoder(packet.payload_type).decode(packet.payload)
        if len(pcm) != 2 * self._frame:
            self._tail = np.frombuffer(pcm, dtype="<i2").astype(np.int16)  # _take cuts it
            del self._packets[self._play]
            self._note_played(packet)
            return None
        del self._packets[self._play]
        self._note_played(packet)
        self._play += self._frame_units
        self._concealer.good_pcm(pcm)
        return pcm

    def _start(self) -> bool:
        """Begin playout once the target delay is buffered (or has been waited for)."""
        if not self._packets:
            self._waited = 0
            return False
        self._waited += 1
        oldest = min(self._packets)
        buffered_ms = (self._newest_end - oldest) / self._units_per_ms
        if buffered_ms < self.stats.target_ms and self._waited * FRAME_MS < self.stats.target_ms:
            return False
        self._playing, self._play, self._waited = True, oldest, 0
        self._tail = np.zeros(0, dtype=np.int16)
        self._lowest_lag = np.inf
        self._expand = self._shrink = 0
        return True

    def _take(self) -> np.ndarray | None:
        """One frame from the timeline at the play position, concealing what is missing."""
        parts: list[np.ndarray] = []
        need = self._frame
        while need:
            if len(self._tail):
                chunk, self._tail = self._tail[:need], self._tail[need:]
                self._play += len(chunk) // self._per_unit
                parts.append(self._concealer.good(chunk))
                need -= len(chunk)
                continue
            packet = self._packets.pop(self._play, None)
            if packet is not None:
                self._note_played(packet)
                pcm = self._decoder(packet.payload_type).decode(packet.payload)
                self._tail = np.frombuffer(pcm, dtype="<i2").astype(np.int16)
                continue
            chunk = self._gap(need)
            if chunk is None:
                return _join(parts, self._frame) if parts else None
            parts.append(chunk)
            need -= len(chunk)
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def _gap(self, need: int) -> np.ndarray | None:
        """Nothing at the play position: conceal a loss, wait out an underrun, or
        re-anchor at the next talk-spurt. None: playout stopped."""
        self._drop_late()
        following = min(self._packets, default=None)
        if following is not None:
            packet = self._packets[following]
            sequence_runs_on = self._last_seq is not None and seq_delta(packet.sequence, self._last_seq) == 1
            too_far = (following - self._play) / self._units_per_ms > self.max_delay_ms
            if sequence_runs_on or too_far:
                # Silence suppression or a jump: the spurt ended. This frame fades out, and
                # the next spurt is re-anchored at the target delay.
                self._stop()
                return self._concealer.conceal(need)
            count = min(need, (following - self._play) * self._per_unit)
            self._play += count // self._per_unit
            return self._concealed(count)
        if self._concealer.exhausted:
            self._stop()
            return None
        return self._concealed(need)  # an underrun: the play position waits for the packet

    def _concealed(self, count: int) -> np.ndarray:
        self.stats.concealed += 1 if count == self._frame else 0
        return self._concealer.conceal(count)

    def _stop(self) -> None:
        """Playout pauses; the next packets start it again at the target delay."""
        self._playing = False
        self._tail = np.zeros(0, dtype=np.int16)

    def _drop_late(self) -> None:
        for ext in [ext for ext in self._packets if ext < self._play]:
            del self._packets[ext]
            self.stats.late += 1

    def _note_played(self, packet: RtpPacket) -> None:
        if self._last_seq is not None:
            self.stats.lost += max(0, seq_delta(packet.sequence, self._last_seq) - 1)
        self._last_seq = packet.sequence

    # --- adaptation ----------------------------------------------------------------

    def _note_lag(self, arrival: float) -> None:
        """The buffer's delay as this packet sees it: how long a packet on the fastest
        path waits between its arrival and its playout, at most."""
        ahead = (arrival * self.codec.clock_rate - self._transits.floor - self._play) / self._units_per_ms
        # The packet at the play position goes out at the next tick, up to a frame later.
        lag = ahead + FRAME_MS
        self.stats.delay_ms = lag
        self._lowest_lag = min(self._lowest_lag, lag)

    def _adapt(self) -> None:
        """Each period: a new target from the transit window, and the frames to insert or
        drop so that the least delay of the period meets it (within a frame)."""
        if len(self._transits) >= 2:
            target = self._transits.spread(TRANSIT_QUANTILE) / self._units_per_ms + FRAME_MS
            self.stats.target_ms = float(min(max(target, self.min_delay_ms), self.max_delay_ms))
        if self._playing and np.isfinite(self._lowest_lag):
            excess = self._lowest_lag - self.stats.target_ms
            frames = min(int(abs(excess) // FRAME_MS), MAX_STEP_FRAMES)
            self._expand, self._shrink = (frames, 0) if excess < 0 else (0, frames)
            self._shrink_waited = 0
        self._lowest_lag = np.inf

    def _shrink_now(self, frame: np.ndarray) -> bool:
        """A drop is due: take a quiet frame for it, or any once it has waited half a period."""
        if not self._shrink:
            return False
        self._shrink_waited += 1
        rms = float(np.sqrt(np.mean(frame.astype(np.float32) ** 2)))
        if rms > QUIET_RMS and self._shrink_waited < ADAPT_TICKS // 2:
            return False
        self._shrink -= 1
        return True


def _crossfade(leaving: np.ndarray, arriving: np.ndarray) -> np.ndarray:
    """One frame that fades from ``leaving`` into ``arriving``: a dropped frame's seam."""
    ramp = np.linspace(0.0, 1.0, len(leaving), endpoint=False, dtype=np.float32)
    mixed = leaving.astype(np.float32) * (1 - ramp) + arriving.astype(np.float32) * ramp
    return np.round(mixed).astype(np.int16)


def _join(parts: list[np.ndarray], frame: int) -> np.ndarray:
    """A frame whose end could not be played: what was, then silence (playout stopped
    after the concealment had already faded out)."""
    out = np.zeros(frame, dtype=np.int16)
    joined = np.concatenate(parts)
    out[:len(joined)] = joined
    return out
