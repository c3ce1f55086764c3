"""RFC 4733 telephone-events in the RTP stream, sans-IO: DTMF digits in and out of RTP.

A key press arrives as a run of packets that share one RTP timestamp (the event's start)
and grow in duration; the last three carry the end bit and are the same packet sent
three times, for loss. Packets of one event may be lost, reordered or repeated, so a digit
is reported once per (SSRC, timestamp) the first time any packet of it arrives: the
start packet gives the lowest latency, and an event whose start was lost is still heard
from its later packets (RFC 4733 section 2.5.2.2).
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass

from .rtp import RtpPacket

#: RFC 4733 section 3.2, table 1: events 0-15; 16 (flash) is not a digit.
EVENT_DIGITS = "0123456789*#ABCD"
#: Events remembered so that their repeated and late packets are not heard again.
REMEMBERED_EVENTS = 32
#: RFC 4733 section 2.5.1.4: the end packet is sent three times, for loss.
END_PACKETS = 3
#: Key press length and level we send: 100 ms is above every receiver's minimum (ITU-T
#: Q.24 asks for 40 ms), and -10 dBm0 is the level a telephone keypad sends.
DEFAULT_DURATION_MS = 100
DEFAULT_VOLUME = 10
#: Pause after a key press before the next one starts (Q.24: at least 40 ms).
INTER_DIGIT_MS = 60
_EVENT = struct.Struct("!BBH")  # event, E|R|volume, duration (RFC 4733 section 2.3)


class DtmfReceiver:
    """Turns one stream's telephone-event packets into digits, each once."""

    def __init__(self) -> None:
        self._seen: deque[tuple[int, int]] = deque(maxlen=REMEMBERED_EVENTS)

    def push(self, packet: RtpPacket) -> str | None:
        """The digit ``packet`` starts, or None (a later packet of an event already heard,
        a flash, or a payload too short to be an event)."""
        if len(packet.payload) < 4:
            return None
        event = packet.payload[0]
        key = (packet.ssrc, packet.timestamp)
        if key in self._seen:
            return None
        self._seen.append(key)
        return EVENT_DIGITS[event] if event < len(EVENT_DIGITS) else None


@dataclass(frozen=True)
class EventPacket:
    """One telephone-event packet to send: all packets of an event share its start
    ``timestamp``; ``marker`` flags the first (RFC 4733 section 2.5.1.1)."""

    payload: bytes
    timestamp: int
    marker: bool


class DtmfSender:
    """Key presses as RFC 4733 packets, one per packet interval, driven by the send clock.

    :meth:`tick` is called once per 20 ms tick with the RTP timestamp the audio would have
    now. During an event it returns the packet to send instead of audio: the event
    starts at that tick's timestamp, each later packet carries the duration so far, and
    the last three carry the end bit and the full duration. Then the line is silent for
    ``INTER_DIGIT_MS`` before the next queued digit.
    """

    def __init__(self, clock_rate: int, packet_ms: int = 20) -> None:
        self._clock_rate = clock_rate
        self._step = clock_rate * packet_ms // 1000
        self._queue: deque[tuple[int, int]] = deque()  # (event code, duration in clock units)
        self._event: int | None = None
        self._start = 0  # the event's RTP timestamp
        self._elapsed = 0  # clock units sent so far
        self._length = 0
        self._ends_left = 0
        self._pause = 0  # ticks of silence before the next event

    def send(self, digits: str, duration_ms: int = DEFAULT_DURATION_MS) -> None:
        """Queue ``digits`` ("0"-"9", "*", "#", "A"-"D"); raises ValueError for others."""
        bad = [d for d in digits if d.upper() not in EVENT_DIGITS]
        if bad:
            raise ValueError(f"not DTMF digits: {''.join(bad)!r} (RFC 4733 has 0-9, *, #, A-D)")
        if duration_ms < self._step * 1000 // self._clock_rate:
            raise ValueError(f"a key press of {duration_ms} ms is shorter than one packet")
        length = self._clock_rate * duration_ms // 1000
        self._queue.extend((EVENT_DIGITS.index(d.upper()), length) for d in digits)

    @property
    def busy(self) -> bool:
        """Digits are being sent or wait to be."""
        return self._event is not None or bool(self._queue) or self._pause > 0

    def tick(self, timestamp: int) -> EventPacket | None:
        """The event packet for this tick, or None: send audio as usual."""
        if self._event is None:
            if self._pause:
                self._pause -= 1
                return None
            if not self._queue:
                return None
            self._event, self._length = self._queue.popleft()
            self._start, self._elapsed, self._ends_left = timestamp, 0, END_PACKETS
        first = self._elapsed == 0
        self._elapsed = min(self._elapsed + self._step, self._length)
        ending = self._elapsed >= self._length
        packet = EventPacket(self._payload(end=ending), self._start, marker=first)
        if ending:
            self._ends_left -= 1
            if not self._ends_left:
                self._event = None
                self._pause = max(1, INTER_DIGIT_MS * self._clock_rate // 1000 // self._step)
        return packet

    def _payload(self, *, end: bool) -> bytes:
        assert self._event is not None
        return _EVENT.pack(self._event, (0x80 if end else 0) | DEFAULT_VOLUME, self._elapsed)
