"""A fixed-depth jitter buffer: RTP packets in as they arrive, one per 20 ms tick out.

The network delivers packets late, early, twice or not at all; the playout side wants
exactly one frame every 20 ms. This buffer holds ``depth`` frames of delay to absorb the
jitter, puts packets back into sequence order and says "lost" for a hole so the caller
can conceal it. It is deliberately simple (no time stretching, no adaptive depth); an
adaptive buffer will replace it behind the same ``push``/``pop``/``stats`` interface.

Sans-IO: the caller's playout clock drives :meth:`JitterBuffer.pop`; nothing here reads
the time. One packet is assumed to carry one 20 ms frame (the ``ptime`` trivox offers).

Rules, in the order :meth:`JitterBuffer.push` applies them:

1. A new SSRC is a new source (RFC 3550 section 8): reset and start over with it.
2. A sequence number more than ``max_frames`` away from the playout position is either a
   stray or a restarted stream. As in RFC 3550 Appendix A.1, it is believed only when the
   next packet follows it (``seq + 1``); then the buffer resets and restarts there.
3. A packet already buffered is a duplicate; one behind the playout position is late.
   Both are dropped and counted.
4. Before playout starts, an older packet moves the starting point back to it, so
   reordering among the first packets loses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from media.rtp import SEQ_MOD, RtpPacket, seq_delta

DEFAULT_DEPTH = 3  # frames of delay: 60 ms absorbs typical access-network jitter
DEFAULT_MAX_FRAMES = 50  # one second: a larger jump is a restart, not jitter


@dataclass
class JitterStats:
    """Counters since the buffer was created (they survive resets).

    ``received`` counts every pushed packet. A duplicate of a packet that has already
    been played is counted as ``late``: the buffer no longer remembers it.
    """

    received: int = 0
    duplicates: int = 0
    late: int = 0
    lost: int = 0
    reordered: int = 0


class JitterBuffer:
    """Reorders one RTP stream and releases it at a fixed delay of ``depth`` frames.

    Playout starts once ``depth`` packets are buffered, or ``depth`` ticks after the first
    one arrived, whichever comes first: a talk-spurt shorter than ``depth`` packets still
    plays, at the same delay.

    ``pop`` returns ``None`` in three cases, all of which the caller conceals the same
    way (repeat/fade, or silence): while buffering at startup or after an underrun, and
    for a lost packet. An underrun (nothing buffered, which is also what a sender's
    silence suppression looks like) does not advance the playout position; the buffer
    refills and resumes from the oldest packet it then holds.
    """

    def __init__(self, depth: int = DEFAULT_DEPTH, max_frames: int = DEFAULT_MAX_FRAMES) -> None:
        if depth < 1:
            raise ValueError(f"depth must be at least one frame, not {depth}")
        if max_frames < depth:
            raise ValueError(f"max_frames ({max_frames}) must be at least depth ({depth})")
        self.depth = depth
        self.max_frames = max_frames
        self.stats = JitterStats()
        self._reset()

    def __len__(self) -> int:
        """Packets currently held."""
        return len(self._packets)

    def _reset(self) -> None:
        self._packets: dict[int, RtpPacket] = {}
        self._ssrc: int | None = None
        self._next: int | None = None  # sequence number of the next frame to play
        self._newest: int | None = None  # highest sequence number admitted
        self._primed = False  # playout has started since the reset
        self._buffering = True  # filling up before (re)starting playout
        self._waited = 0  # ticks spent buffering with packets held
        self._probe: RtpPacket | None = None  # a far packet awaiting its successor (rule 2)

    def push(self, packet: RtpPacket) -> None:
        """Take one packet from the network, in whatever order it arrived."""
        self.stats.received += 1
        if self._ssrc is not None and packet.ssrc != self._ssrc:
            self._reset()  # rule 1
        if self._next is None or abs(seq_delta(packet.sequence, self._next)) <= self.max_frames:
            self._admit(packet)
        else:
            self._jump(packet)  # rule 2

    def _jump(self, packet: RtpPacket) -> None:
        probe = self._probe
        if probe is not None and packet.sequence == (probe.sequence + 1) % SEQ_MOD:
            self._reset()
            self._admit(probe)
            self._admit(packet)
        else:
            self._probe = packet

    def _admit(self, packet: RtpPacket) -> None:
        seq = packet.sequence
        if self._next is None:
            self._ssrc, self._next, self._newest = packet.ssrc, seq, seq
            self._packets[seq] = packet
            return
        if seq in self._packets:
            self.stats.duplicates += 1  # rule 3
            return
        if seq_delta(seq, self._next) < 0:
            if self._primed:
                self.stats.late += 1  # rule 3
                return
            self._next = seq  # rule 4
        assert self._newest is not None
        if seq_delta(seq, self._newest) < 0:
            self.stats.reordered += 1
        else:
            self._newest = seq
        self._packets[seq] = packet

    def pop(self) -> RtpPacket | None:
        """The frame for this 20 ms tick, or ``None`` for one to conceal."""
        if self._buffering:
            if self._packets:
                self._waited += 1
            if len(self._packets) < self.depth and self._waited < self.depth:
                return None
            self._resume()
        if not self._packets:
            self._buffering, self._waited = True, 0  # underrun: refill before playing on
            return None
        assert self._next is not None
        packet = self._packets.pop(self._next, None)
        self._next = (self._next + 1) % SEQ_MOD
        if packet is None:
            self.stats.lost += 1
        return packet

    def _resume(self) -> None:
        """Start (or restart after an underrun) playout at the oldest buffered packet;
        any sequence numbers skipped on the way were lost."""
        assert self._next is not None
        start = self._next
        oldest = min(self._packets, key=lambda seq: seq_delta(seq, start))
        self.stats.lost += seq_delta(oldest, start)
        self._next = oldest
        self._buffering = False
        self._primed = True
