"""RFC 4733 telephone-events in the RTP stream, sans-IO: DTMF digits out of RTP packets.

A key press arrives as a run of packets that share one RTP timestamp (the event's start)
and grow in duration; the last three carry the end bit and are the same packet sent
three times, for loss. Packets of one event may be lost, reordered or repeated, so a digit
is reported once per (SSRC, timestamp) the first time any packet of it arrives: the
start packet gives the lowest latency, and an event whose start was lost is still heard
from its later packets (RFC 4733 section 2.5.2.2).
"""

from __future__ import annotations

from collections import deque

from .rtp import RtpPacket

#: RFC 4733 section 3.2, table 1: events 0-15; 16 (flash) is not a digit.
EVENT_DIGITS = "0123456789*#ABCD"
#: Events remembered so that their repeated and late packets are not heard again.
REMEMBERED_EVENTS = 32


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
