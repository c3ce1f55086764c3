"""RTP data packets (RFC 3550): parse, serialise, and packetise one outgoing stream.

Sans-IO: bytes in, packets out, and the reverse. The UDP socket, the clock and the RTCP
side live in the Trio adapter; nothing here blocks or reads the time.

Fixed header, RFC 3550 section 5.1::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |V=2|P|X|  CC   |M|     PT      |       sequence number         |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                           timestamp                           |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |           synchronization source (SSRC) identifier            |
    +=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+=+
    |            contributing source (CSRC) identifiers             |
    |                             ....                              |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass

RTP_VERSION = 2
HEADER_SIZE = 12  # RFC 3550 section 5.1: fixed header, before CSRCs and extension
MAX_CSRCS = 15  # RFC 3550 section 5.1: CC is a 4-bit field
EXTENSION_HEADER_SIZE = 4  # RFC 3550 section 5.3.1: 16-bit profile + 16-bit length

SEQ_MOD = 1 << 16  # sequence numbers are 16 bits and wrap (section 5.1)
TS_MOD = 1 << 32  # timestamps and SSRC/CSRC identifiers are 32 bits
MAX_PAYLOAD_TYPE = 0x7F

# RFC 5761 section 4: with RTP and RTCP on one port, the second octet of an RTCP packet
# (its packet type) sits where the RTP marker bit and payload type are. RTCP uses types
# 192..223 (SR 200, RR 201, SDES 202, BYE 203, APP 204, and the feedback and XR types
# 205..207 that WebRTC peers send), which is why RTP payload types 64..95 must not be
# used on a multiplexed port. A whole range check also catches the feedback types.
RTCP_PACKET_TYPES = range(192, 224)

_FIXED = struct.Struct("!BBHII")
_EXTENSION = struct.Struct("!HH")


class RtpError(ValueError):
    """The peer sent a datagram that is not a well-formed RTP packet."""


@dataclass(frozen=True)
class RtpPacket:
    """One RTP data packet, with padding already stripped.

    ``extension`` is the header extension of RFC 3550 section 5.3.1 as
    ``(profile-defined 16 bits, data)``; the data length is a multiple of 4 bytes.
    """

    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.payload_type <= MAX_PAYLOAD_TYPE:
            raise ValueError(f"payload type {self.payload_type} is outside 0..127")
        if not 0 <= self.sequence < SEQ_MOD:
            raise ValueError(f"sequence number {self.sequence} is not 16-bit")
        if not 0 <= self.timestamp < TS_MOD:
            raise ValueError(f"timestamp {self.timestamp} is not 32-bit")
        if not 0 <= self.ssrc < TS_MOD:
            raise ValueError(f"SSRC {self.ssrc} is not 32-bit")
        if len(self.csrcs) > MAX_CSRCS:
            raise ValueError(f"{len(self.csrcs)} CSRCs; the CC field holds at most 15")
        if any(not 0 <= csrc < TS_MOD for csrc in self.csrcs):
            raise ValueError(f"CSRC list {self.csrcs} holds a value that is not 32-bit")
        if self.extension is not None:
            profile, data = self.extension
            if not 0 <= profile < SEQ_MOD:
                raise ValueError(f"extension profile field {profile} is not 16-bit")
            # RFC 3550 section 5.3.1: the length counts 32-bit words in a 16-bit field.
            if len(data) % 4 or len(data) // 4 >= SEQ_MOD:
                raise ValueError(f"extension data of {len(data)} bytes is not 0..65535 words")

    def to_bytes(self) -> bytes:
        """Serialise without padding (RFC 3550 section 5.1 makes padding optional; it
        exists for block ciphers, and SRTP does not need it)."""
        first = (RTP_VERSION << 6) | len(self.csrcs)
        if self.extension is not None:
            first |= 0x10
        second = (0x80 if self.marker else 0) | self.payload_type
        parts = [_FIXED.pack(first, second, self.sequence, self.timestamp, self.ssrc)]
        parts.extend(csrc.to_bytes(4, "big") for csrc in self.csrcs)
        if self.extension is not None:
            profile, data = self.extension
            parts.append(_EXTENSION.pack(profile, len(data) // 4))
            parts.append(data)
        parts.append(self.payload)
        return b"".join(parts)


def parse_rtp(data: bytes) -> RtpPacket:
    """Parse one RTP datagram; raise :class:`RtpError` saying what is wrong with it.

    An RTCP packet arriving on a multiplexed port (RFC 5761) raises an error whose
    message starts with ``"RTCP"``; a caller that does not handle RTCP drops it.
    """
    if len(data) < 2:
        raise RtpError(f"datagram of {len(data)} bytes is too short for RTP")
    first, second = data[0], data[1]
    version = first >> 6
    if version != RTP_VERSION:
        raise RtpError(f"RTP version {version}, expected {RTP_VERSION}")
    if second in RTCP_PACKET_TYPES:
        raise RtpError(f"RTCP packet type {second} on the RTP port (RFC 5761 section 4)")
    if len(data) < HEADER_SIZE:
        raise RtpError(f"RTP packet of {len(data)} bytes is shorter than its 12-byte header")

    _, _, sequence, timestamp, ssrc = _FIXED.unpack_from(data)
    offset = HEADER_SIZE

    csrc_count = first & 0x0F
    if len(data) < offset + 4 * csrc_count:
        raise RtpError(f"RTP packet of {len(data)} bytes is too short for {csrc_count} CSRCs")
    csrcs = struct.unpack_from(f"!{csrc_count}I", data, offset)
    offset += 4 * csrc_count

    extension = None
    if first & 0x10:  # X bit, RFC 3550 section 5.3.1
        if len(data) < offset + EXTENSION_HEADER_SIZE:
            raise RtpError("RTP header extension is truncated before its length field")
        profile, words = _EXTENSION.unpack_from(data, offset)
        offset += EXTENSION_HEADER_SIZE
        if len(data) < offset + 4 * words:
            raise RtpError(f"RTP header extension of {words} words runs past the packet end")
        extension = (profile, bytes(data[offset : offset + 4 * words]))
        offset += 4 * words

    end = len(data)
    if first & 0x20:  # P bit: the last octet counts the padding, itself included (5.1)
        padding = data[-1]
        if padding == 0 or padding > end - offset:
            raise RtpError(
                f"RTP padding count {padding} does not fit the {end - offset} bytes of body"
            )
        end -= padding

    return RtpPacket(
        payload_type=second & MAX_PAYLOAD_TYPE,
        sequence=sequence,
        timestamp=timestamp,
        ssrc=ssrc,
        payload=bytes(data[offset:end]),
        marker=bool(second & 0x80),
        csrcs=csrcs,
        extension=extension,
    )


def seq_delta(a: int, b: int) -> int:
    """Signed distance from sequence number ``b`` to ``a``, in -32768..32767.

    RFC 3550 Appendix A.1 treats sequence numbers as a circle: 0 follows 65535, so
    plain subtraction lies at the wrap. Half the circle ahead is "newer", half behind
    is "older".
    """
    return (a - b + SEQ_MOD // 2) % SEQ_MOD - SEQ_MOD // 2


def seq_newer(a: int, b: int) -> bool:
    """Whether sequence number ``a`` comes after ``b``, across the 16-bit wrap."""
    return seq_delta(a, b) > 0


class RtpSender:
    """Sans-IO packetiser for one outgoing RTP stream (one SSRC).

    It owns the two counters a sender must keep consistent: the sequence number, which
    goes up by one per packet sent so the receiver can detect loss, and the timestamp,
    which follows the sampling clock whether or not a packet is sent, so the receiver
    can place a talk-spurt after silence at the right time (RFC 3550 section 5.1).
    Initial values are random, as section 5.1 asks, to make known-plaintext attacks on
    encrypted streams harder and to tell a restarted stream apart.
    """

    def __init__(
        self,
        payload_type: int,
        clock_rate: int,
        ssrc: int | None = None,
        sequence: int | None = None,
        timestamp: int | None = None,
    ) -> None:
        if not 0 <= payload_type <= MAX_PAYLOAD_TYPE:
            raise ValueError(f"payload type {payload_type} is outside 0..127")
        if clock_rate <= 0:
            raise ValueError(f"clock rate must be positive, not {clock_rate}")
        self.payload_type = payload_type
        self.clock_rate = clock_rate
        # RFC 3550 section 8.1: the SSRC is chosen at random.
        self.ssrc = secrets.randbits(32) if ssrc is None else ssrc
        if not 0 <= self.ssrc < TS_MOD:
            raise ValueError(f"SSRC {self.ssrc} is not 32-bit")
        self._sequence = secrets.randbits(16) if sequence is None else sequence % SEQ_MOD
        self._timestamp = secrets.randbits(32) if timestamp is None else timestamp % TS_MOD

    @property
    def sequence(self) -> int:
        """The sequence number the next packet will carry."""
        return self._sequence

    @property
    def timestamp(self) -> int:
        """The timestamp the next packet will carry."""
        return self._timestamp

    def packet(self, payload: bytes, samples: int, *, marker: bool = False) -> bytes:
        """Serialise ``payload`` with the current counters, then advance them.

        ``samples`` is how many clock ticks the payload covers (160 for 20 ms of G.711).
        Set ``marker`` on the first packet of a talk-spurt (RFC 3551 section 4.1).
        """
        data = self._header(self.payload_type, self._timestamp, marker) + payload
        self._sequence = (self._sequence + 1) % SEQ_MOD
        self.skip(samples)
        return data

    def event(self, payload_type: int, timestamp: int, payload: bytes, *, marker: bool) -> bytes:
        """Serialise an RFC 4733 event packet: the next sequence number, but the event's
        own start ``timestamp``; the audio clock is moved on by :meth:`skip` meanwhile."""
        if not 0 <= payload_type <= MAX_PAYLOAD_TYPE:
            raise ValueError(f"payload type {payload_type} is outside 0..127")
        data = self._header(payload_type, timestamp % TS_MOD, marker) + payload
        self._sequence = (self._sequence + 1) % SEQ_MOD
        return data

    def _header(self, payload_type: int, timestamp: int, marker: bool) -> bytes:
        """The fixed header, with no CSRCs or extension (RFC 3550 section 5.1). Packed
        directly: the counters are kept in range here, so there is nothing to check
        per packet."""
        return _FIXED.pack(RTP_VERSION << 6, (0x80 if marker else 0) | payload_type,
                           self._sequence, timestamp, self.ssrc)

    def skip(self, samples: int) -> None:
        """Advance the timestamp for a tick on which nothing is sent (silence
        suppression); the sequence number stays, since no packet went out."""
        if samples < 0:
            raise ValueError(f"cannot move the RTP clock back by {-samples} samples")
        self._timestamp = (self._timestamp + samples) % TS_MOD
