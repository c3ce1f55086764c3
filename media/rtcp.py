"""RTCP (RFC 3550 section 6): reports about one RTP stream, both ways, sans-IO.

RTCP is how two ends of a call learn what the network does to their media: each sends,
every few seconds, a sender report (what it sent) or a receiver report (what it got:
loss, jitter), and the round trip falls out of the timestamps the reports echo. trivox
sends one report per interval for its stream and reads the peer's into the call's
stats, which is what an operator looks at when a caller says the line was bad.

The pieces are plain: packets are dataclasses with ``to_bytes``; :func:`parse_rtcp`
reads a compound datagram; :class:`ReceptionStats` is the receiver's bookkeeping of
RFC 3550 Appendix A.1 (sequence validation), A.3 (loss) and A.8 (jitter); and
:class:`RtcpSession` ties one stream's send and receive sides together. Every method
that needs the time takes it; nothing here reads a clock or touches a socket.
"""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass

from media.rtp import SEQ_MOD, TS_MOD, seq_delta

RTCP_VERSION = 2
SR, RR, SDES, BYE = 200, 201, 202, 203
CNAME = 1  # SDES item type (section 6.5.1)
#: Section 6.2: the minimum interval between reports; we send at 0.5-1.5 times it.
MIN_INTERVAL_S = 5.0
#: How far below zero a computed round trip may fall and still be read as 0 ms: the
#: peer's DLSR is rounded on its own clock (see round_trip_ms).
RTT_SLACK_MS = 5.0
#: Seconds between the NTP epoch (1900) and the Unix epoch (1970).
NTP_OFFSET = 2_208_988_800
#: Appendix A.1: a source is valid after this many packets in sequence.
MIN_SEQUENTIAL = 2
MAX_DROPOUT = 3000
MAX_MISORDER = 100

_HEADER = struct.Struct("!BBH")
_SENDER_INFO = struct.Struct("!IIIII")  # SSRC, NTP msw, NTP lsw, RTP timestamp, packets, octets follow
_BLOCK = struct.Struct("!IIIIII")
_SSRC = struct.Struct("!I")


class RtcpError(ValueError):
    """A datagram that is not well-formed RTCP."""


@dataclass(frozen=True)
class ReportBlock:
    """Section 6.4.1: what the reporter received from source ``ssrc``."""

    ssrc: int
    fraction_lost: int  # of 256, since the reporter's last report
    cumulative_lost: int  # signed 24 bits
    highest_sequence: int  # extended: cycles << 16 | sequence
    jitter: int  # in timestamp units
    last_sr: int  # middle 32 bits of the NTP time of the last SR from ssrc
    delay_since_last_sr: int  # in 1/65536 s

    def to_bytes(self) -> bytes:
        lost = self.cumulative_lost & 0xFFFFFF  # two's complement in 24 bits
        return _BLOCK.pack(self.ssrc, (self.fraction_lost & 0xFF) << 24 | lost, self.highest_sequence,
                           self.jitter, self.last_sr, self.delay_since_last_sr)

    @classmethod
    def from_bytes(cls, data: bytes, offset: int) -> ReportBlock:
        ssrc, lost_word, highest, jitter, lsr, dlsr = _BLOCK.unpack_from(data, offset)
        cumulative = lost_word & 0xFFFFFF
        if cumulative & 0x800000:
            cumulative -= 1 << 24
        return cls(ssrc, lost_word >> 24, cumulative, highest, jitter, lsr, dlsr)


@dataclass(frozen=True)
class SenderReport:
    ssrc: int
    ntp_timestamp: int  # 64-bit NTP fixed point
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()

    def to_bytes(self) -> bytes:
        body = _SSRC.pack(self.ssrc) + struct.pack("!IIIII", self.ntp_timestamp >> 32, self.ntp_timestamp & 0xFFFFFFFF,
                                                   self.rtp_timestamp, self.packet_count, self.octet_count)
        return _packet(SR, len(self.reports), body + b"".join(b.to_bytes() for b in self.reports))


@dataclass(frozen=True)
class ReceiverReport:
    ssrc: int
    reports: tuple[ReportBlock, ...] = ()

    def to_bytes(self) -> bytes:
        return _packet(RR, len(self.reports), _SSRC.pack(self.ssrc) + b"".join(b.to_bytes() for b in self.reports))


@dataclass(frozen=True)
class SourceDescription:
    """SDES with the CNAME of each source (other items are read and skipped)."""

    chunks: tuple[tuple[int, str], ...]

    def to_bytes(self) -> bytes:
        body = b""
        for ssrc, cname in self.chunks:
            name = cname.encode()[:255]
            chunk = _SSRC.pack(ssrc) + bytes([CNAME, len(name)]) + name + b"\0"
            body += chunk + bytes(-len(chunk) % 4)  # the item list ends with a null, padded to 32 bits
        return _packet(SDES, len(self.chunks), body)


@dataclass(frozen=True)
class Goodbye:
    ssrcs: tuple[int, ...]
    reason: str | None = None

    def to_bytes(self) -> bytes:
        body = b"".join(_SSRC.pack(ssrc) for ssrc in self.ssrcs)
        if self.reason is not None:
            text = self.reason.encode()[:255]
            body += bytes([len(text)]) + text
            body += bytes(-len(body) % 4)
        return _packet(BYE, len(self.ssrcs), body)


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Goodbye


def _packet(packet_type: int, count: int, body: bytes) -> bytes:
    if count > 31:
        raise ValueError(f"{count} items do not fit RTCP's 5-bit count")
    return _HEADER.pack(RTCP_VERSION << 6 | count, packet_type, len(body) // 4) + body


def compound(*packets: RtcpPacket) -> bytes:
    """One datagram (section 6.1): it must start with an SR or RR and carry a CNAME."""
    if not packets or not isinstance(packets[0], SenderReport | ReceiverReport):
        raise ValueError("a compound RTCP packet starts with a sender or receiver report")
    return b"".join(packet.to_bytes() for packet in packets)


def parse_rtcp(data: bytes) -> list[RtcpPacket]:
    """The packets of one compound datagram; types we do not use (APP, feedback, XR)
    are skipped. Raises :class:`RtcpError` saying what is wrong."""
    packets: list[RtcpPacket] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < _HEADER.size:
            raise RtcpError(f"{len(data) - offset} stray bytes after the last RTCP packet")
        first, packet_type, words = _HEADER.unpack_from(data, offset)
        if first >> 6 != RTCP_VERSION:
            raise RtcpError(f"RTCP version {first >> 6}, expected 2")
        end = offset + 4 + 4 * words
        if end > len(data):
            raise RtcpError(f"RTCP packet of {4 + 4 * words} bytes runs past the datagram's {len(data)}")
        if first & 0x20:  # padding: only the last packet may have it (section 6.4.1)
            if end != len(data) or data[end - 1] == 0 or data[end - 1] > end - offset - 4:
                raise RtcpError("RTCP padding on a packet that is not the last, or a bad padding count")
            body = data[offset + 4:end - data[end - 1]]
        else:
            body = data[offset + 4:end]
        packet = _parse_one(packet_type, first & 0x1F, body)
        if packet is not None:
            packets.append(packet)
        offset = end
    return packets


def _parse_one(packet_type: int, count: int, body: bytes) -> RtcpPacket | None:
    try:
        if packet_type == SR:
            ssrc, msw, lsw, rtp_ts, packets, octets = struct.unpack_from("!IIIIII", body)
            return SenderReport(ssrc, msw << 32 | lsw, rtp_ts, packets, octets, _blocks(body, 24, count))
        if packet_type == RR:
            return ReceiverReport(_SSRC.unpack_from(body)[0], _blocks(body, 4, count))
        if packet_type == SDES:
            return SourceDescription(_chunks(body, count))
        if packet_type == BYE:
            ssrcs = struct.unpack_from(f"!{count}I", body)
            reason = None
            if len(body) > 4 * count:
                length = body[4 * count]
                reason = body[4 * count + 1:4 * count + 1 + length].decode(errors="replace")
            return Goodbye(ssrcs, reason)
    except struct.error as exc:
        raise RtcpError(f"RTCP packet type {packet_type} too short for its {count} items: {exc}") from None
    return None


def _blocks(body: bytes, offset: int, count: int) -> tuple[ReportBlock, ...]:
    if len(body) < offset + count * _BLOCK.size:
        raise RtcpError(f"report count {count} needs {offset + count * _BLOCK.size} bytes, has {len(body)}")
    return tuple(ReportBlock.from_bytes(body, offset + i * _BLOCK.size) for i in range(count))


def _chunks(body: bytes, count: int) -> tuple[tuple[int, str], ...]:
    chunks, offset = [], 0
    for _ in range(count):
        ssrc = _SSRC.unpack_from(body, offset)[0]
        offset += 4
        cname = ""
        while offset < len(body) and body[offset] != 0:
            kind, length = body[offset], body[offset + 1]
            if kind == CNAME:
                cname = body[offset + 2:offset + 2 + length].decode(errors="replace")
            offset += 2 + length
        offset += 4 - offset % 4  # past the null item and the padding to 32 bits
        chunks.append((ssrc, cname))
    return tuple(chunks)


def ntp_from_unix(seconds: float) -> int:
    """64-bit NTP fixed point (epoch 1900) for a Unix time."""
    return int((seconds + NTP_OFFSET) * (1 << 32))


def middle32(ntp: int) -> int:
    """The middle 32 bits of an NTP timestamp: what LSR echoes (section 6.4.1)."""
    return (ntp >> 16) & 0xFFFFFFFF


class ReceptionStats:
    """What we received from one source, kept as RFC 3550 Appendix A does; a new
    source (SSRC) gets new books, see :meth:`RtcpSession.on_received`."""

    def __init__(self, clock_rate: int) -> None:
        self.clock_rate = clock_rate
        self.ssrc: int | None = None
        self.received = 0
        self._base: int | None = None  # first extended sequence number
        self._max = 0  # highest sequence number seen (16 bits)
        self._cycles = 0
        self._probation = MIN_SEQUENTIAL
        self._bad_seq: int | None = None
        self._expected_prior = 0
        self._received_prior = 0
        self._transit: float | None = None
        self._jitter = 0.0  # timestamp units
        self._last_sr = 0
        self._last_sr_arrival: float | None = None

    @property
    def extended_max(self) -> int:
        return self._cycles + self._max

    @property
    def expected(self) -> int:
        """Packets the source sent since it became valid (Appendix A.3)."""
        return 0 if self._base is None else self.extended_max - self._base + 1

    @property
    def lost(self) -> int:
        """Cumulative packets lost (Appendix A.3); duplicates can make it negative."""
        return self.expected - self.received

    @property
    def jitter_ms(self) -> float:
        return self._jitter * 1000 / self.clock_rate

    def on_packet(self, ssrc: int, sequence: int, timestamp: int, arrival: float) -> None:
        """One RTP packet from the source; ``arrival`` in seconds on any steady clock."""
        if self.ssrc is None:
            self.ssrc = ssrc
            self._max = (sequence - 1) % SEQ_MOD
        if not self._update_sequence(sequence):
            return
        self.received += 1
        # Appendix A.8: the interarrival jitter, in timestamp units.
        transit = arrival * self.clock_rate - timestamp
        if self._transit is not None:
            d = abs(transit - self._transit)
            if d < TS_MOD // 2:  # not across a timestamp wrap
                self._jitter += (d - self._jitter) / 16
        self._transit = transit

    def _update_sequence(self, sequence: int) -> bool:
        """Appendix A.1's update_seq: probation, wrap counting, restarts. False: do not
        count the packet (on probation, or a stray far from the stream)."""
        udelta = (sequence - self._max) % SEQ_MOD
        if self._probation:
            if sequence == (self._max + 1) % SEQ_MOD:
                self._probation -= 1
                self._max = sequence
                if self._probation == 0:
                    self._init_sequence(sequence)
                    return True
            else:
                self._probation = MIN_SEQUENTIAL - 1
                self._max = sequence
            return False
        if udelta < MAX_DROPOUT:
            if sequence < self._max:
                self._cycles += SEQ_MOD  # wrapped
            self._max = sequence
        elif udelta <= SEQ_MOD - MAX_MISORDER:
            if sequence != self._bad_seq:  # a big jump: believed if the next one follows
                self._bad_seq = (sequence + 1) % SEQ_MOD
                return False
            self._init_sequence(sequence)  # the source restarted
        return True  # in order, or a duplicate / reordered packet

    def _init_sequence(self, sequence: int) -> None:
        self._base = sequence
        self._max = sequence
        self._bad_seq = None
        self._cycles = 0
        self.received = 0
        self._expected_prior = self._received_prior = 0

    def on_sender_report(self, report: SenderReport, arrival: float) -> None:
        """The source's SR: kept so our next report can echo it (LSR, DLSR)."""
        self._last_sr = middle32(report.ntp_timestamp)
        self._last_sr_arrival = arrival

    def report_block(self, now: float) -> ReportBlock:
        """Section 6.4.1 for this source, as of ``now`` (same clock as ``arrival``)."""
        expected, received = self.expected, self.received
        interval_expected = expected - self._expected_prior
        interval_lost = interval_expected - (received - self._received_prior)
        self._expected_prior, self._received_prior = expected, received
        fraction = (interval_lost << 8) // interval_expected if interval_expected > 0 and interval_lost > 0 else 0
        lost = max(-(1 << 23), min(self.lost, (1 << 23) - 1))
        dlsr = 0 if self._last_sr_arrival is None else int((now - self._last_sr_arrival) * 65536)
        return ReportBlock(self.ssrc or 0, fraction, lost, self.extended_max & 0xFFFFFFFF, int(self._jitter),
                           self._last_sr, dlsr)


def round_trip_ms(block: ReportBlock, arrival_ntp: int) -> float | None:
    """Section 6.4.1: RTT = A - LSR - DLSR, from a report block about our stream that
    arrived at NTP time ``arrival_ntp``; None when the peer has had no SR from us.

    On a short path the result is near zero, and the peer's DLSR, measured on its own
    coarser clock (libre's, baresip's, counts whole milliseconds), can exceed the true
    delay by a little: a result at most ``RTT_SLACK_MS`` below zero is a round trip of
    0 ms. Further below zero, the report is bogus (or the clocks jumped): None."""
    if block.last_sr == 0:
        return None
    units = (middle32(arrival_ntp) - block.last_sr - block.delay_since_last_sr) & 0xFFFFFFFF
    if units >= 1 << 31:  # negative
        below_ms = ((1 << 32) - units) * 1000 / 65536
        return 0.0 if below_ms <= RTT_SLACK_MS else None
    return units * 1000 / 65536


def report_interval(rng: random.Random) -> float:
    """Seconds to the next report: the 5 s minimum, randomised to 0.5-1.5 times (6.3.1)."""
    return MIN_INTERVAL_S * rng.uniform(0.5, 1.5)


@dataclass
class PeerStats:
    """What the peer's reports say about our stream."""

    fraction_lost: float = 0.0  # 0..1, over the peer's last interval
    cumulative_lost: int = 0
    jitter_ms: float = 0.0
    round_trip_ms: float | None = None
    reports: int = 0


class RtcpSession:
    """RTCP for one RTP stream: our reports out, the peer's in."""

    def __init__(self, ssrc: int, clock_rate: int, cname: str, rng: random.Random | None = None) -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self.cname = cname
        self.reception = ReceptionStats(clock_rate)
        self.peer = PeerStats()
        self._rng = rng or random.Random()
        self._packets = 0
        self._octets = 0
        self._last_rtp_timestamp = 0
        self._last_send_time = 0.0
        self.next_report = self._rng.uniform(0.5, 1.5) * MIN_INTERVAL_S / 2  # the first comes sooner

    def on_received(self, ssrc: int, sequence: int, timestamp: int, arrival: float) -> None:
        """One RTP packet from the peer."""
        if self.reception.ssrc not in (None, ssrc):
            self.reception = ReceptionStats(self.clock_rate)  # a new source
        self.reception.on_packet(ssrc, sequence, timestamp, arrival)

    def on_sent(self, payload_octets: int, rtp_timestamp: int, now: float) -> None:
        """We sent one RTP packet with ``payload_octets`` of payload."""
        self._packets += 1
        self._octets += payload_octets
        self._last_rtp_timestamp = rtp_timestamp
        self._last_send_time = now

    def report(self, now: float, wallclock: float) -> bytes:
        """Our compound report at ``now`` (the stream's clock) and Unix ``wallclock``: an SR
        once we have sent, else an RR, then our CNAME. Schedules the next one."""
        blocks = (self.reception.report_block(now),) if self.reception.ssrc is not None else ()
        if self._packets:
            # The RTP timestamp that corresponds to this instant, on our media clock.
            rtp_now = (self._last_rtp_timestamp + int((now - self._last_send_time) * self.clock_rate)) % TS_MOD
            first: SenderReport | ReceiverReport = SenderReport(
                self.ssrc, ntp_from_unix(wallclock), rtp_now, self._packets & 0xFFFFFFFF,
                self._octets & 0xFFFFFFFF, blocks)
        else:
            first = ReceiverReport(self.ssrc, blocks)
        self.next_report = now + report_interval(self._rng)
        return compound(first, SourceDescription(((self.ssrc, self.cname),)))

    def receive(self, data: bytes, now: float, wallclock: float) -> list[RtcpPacket]:
        """The peer's compound packet: its SR is noted for our next report, and its report
        block about our SSRC becomes :attr:`peer`. Raises :class:`RtcpError`."""
        packets = parse_rtcp(data)
        for packet in packets:
            if isinstance(packet, SenderReport) and packet.ssrc == self.reception.ssrc:
                self.reception.on_sender_report(packet, now)
            if isinstance(packet, SenderReport | ReceiverReport):
                for block in packet.reports:
                    if block.ssrc == self.ssrc:
                        self._note(block, wallclock)
        return packets

    def _note(self, block: ReportBlock, wallclock: float) -> None:
        peer = self.peer
        peer.fraction_lost = block.fraction_lost / 256
        peer.cumulative_lost = block.cumulative_lost
        peer.jitter_ms = block.jitter * 1000 / self.clock_rate
        rtt = round_trip_ms(block, ntp_from_unix(wallclock))
        if rtt is not None:
            peer.round_trip_ms = rtt
        peer.reports += 1
