"""SDP, sans-IO: parse an offer (RFC 4566) and build the answer (RFC 3264).

trivox mostly answers. It offers only when an INVITE came without an offer (a delayed
offer, RFC 3261 section 13.2.1): our offer goes in the 2xx, and ``read_answer`` takes
the caller's answer from the ACK. The answer keeps the offer's m-lines in order
(RFC 3264 section 6), accepts the first audio stream that carries a codec we speak,
chosen by *our* preference among what the offer lists, and rejects every other stream
with port 0. G.711 is recognised by its static payload type (RFC 3551 section 6) or by
an ``a=rtpmap`` for a dynamic one; DTMF rides along as RFC 4733 telephone-event when
the offer has it.

Errors follow SIP's answers: ``SdpError`` for a body that is not SDP (400) and
``NotAcceptable`` for SDP with nothing we can take (488, RFC 3261 section 13.3.1.1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from media.codecs import CODECS

#: RFC 4566 section 5.1: the only version there is.
SDP_VERSION = "0"
#: RFC 3551 section 3: payload types from 96 up are dynamic, bound by a=rtpmap.
DYNAMIC_PAYLOAD_TYPES = 96
#: RFC 3551 section 6, table 4: the static payload types of the codecs we speak.
STATIC_PAYLOAD_TYPES = {str(codec.payload_type): (codec.name, codec.clock_rate)
                        for codec in CODECS.values() if codec.payload_type < DYNAMIC_PAYLOAD_TYPES}
#: RTP profiles we take. SAVP/SAVPF need SRTP keys we do not have; AVPF is AVP with
#: feedback we may ignore (RFC 4585 section 3.2), and some softphones offer only it.
RTP_PROFILES = ("RTP/AVP", "RTP/AVPF")
#: RFC 4733 section 7.1.1: the DTMF payload format, and the events we accept (section 3.2:
#: 0-9, *, #, A-D and flash).
TELEPHONE_EVENT = "telephone-event"
TELEPHONE_EVENTS = "0-16"
#: RFC 3551 section 4.5: 20 ms is the default packet time for G.711, and the frame
#: size of trivox's audio plane.
DEFAULT_PTIME = 20
MAX_PORT = 65535
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
#: RFC 3264 section 6.1: the answer's direction for each offered one.
ANSWER_DIRECTION = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly",
                    "inactive": "inactive"}

Attribute = tuple[str, str | None]


class SdpError(ValueError):
    """The body is not SDP we can read (answer 400)."""


class NotAcceptable(SdpError):
    """SDP with no stream we can take (answer 488)."""


@dataclass(frozen=True)
class Origin:
    """RFC 4566 section 5.2:
    o=<username> <sess-id> <sess-version> <nettype> <addrtype> <unicast-address>"""

    username: str
    session_id: str
    session_version: str
    nettype: str
    addrtype: str
    address: str

    def __str__(self) -> str:
        return (f"{self.username} {self.session_id} {self.session_version} "
                f"{self.nettype} {self.addrtype} {self.address}")


@dataclass
class MediaDescription:
    """RFC 4566 section 5.14: m=<media> <port> <proto> <fmt> ... and its c= and a= lines.

    ``connection`` is the address only (no TTL); ``attributes`` keep their order and
    repeats, as ``(name, value)`` with value None for a flag such as ``a=sendrecv``.
    """

    media: str
    port: int
    proto: str
    formats: list[str]
    connection: str | None = None
    attributes: list[Attribute] = field(default_factory=list)

    def attribute(self, name: str) -> list[str | None]:
        """Values of every ``a=name`` line, in order."""
        return [value for key, value in self.attributes if key == name]

    def rtpmap(self) -> dict[str, tuple[str, int]]:
        """Payload type -> (encoding name, clock rate) for the listed formats.

        RFC 4566 section 6: a=rtpmap:<payload type> <encoding name>/<clock rate>[/<params>];
        a static type needs no rtpmap (RFC 3551 section 6), but one may restate it.
        """
        mapping = {pt: STATIC_PAYLOAD_TYPES[pt] for pt in self.formats if pt in STATIC_PAYLOAD_TYPES}
        for value in self.attribute("rtpmap"):
            pt, _, encoding = (value or "").strip().partition(" ")
            name, _, rate = encoding.strip().partition("/")
            rate = rate.partition("/")[0]
            if pt in self.formats and name and rate.isdigit():
                mapping[pt] = (name, int(rate))
        return mapping


@dataclass
class SessionDescription:
    """RFC 4566 section 5: the lines an offer/answer exchange needs. Lines we do not use
    (i=, u=, e=, p=, b=, z=, k=, r=) are read past and not kept."""

    origin: Origin
    session_name: str = "-"
    connection: str | None = None
    media: list[MediaDescription] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    timing: str = "0 0"
    version: str = SDP_VERSION

    def to_bytes(self) -> bytes:
        # RFC 4566 section 5: the order of the lines is fixed; every line ends in CRLF.
        lines = [f"v={self.version}", f"o={self.origin}", f"s={self.session_name}"]
        if self.connection:
            lines.append(f"c={_connection_line(self.connection)}")
        lines.append(f"t={self.timing}")
        lines += [_attribute_line(attribute) for attribute in self.attributes]
        for m in self.media:
            lines.append(f"m={m.media} {m.port} {m.proto} {' '.join(m.formats)}")
            if m.connection:
                lines.append(f"c={_connection_line(m.connection)}")
            lines += [_attribute_line(attribute) for attribute in m.attributes]
        return ("\r\n".join(lines) + "\r\n").encode()


def _address_type(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


def _connection_line(address: str) -> str:
    # RFC 4566 section 5.7: c=<nettype> <addrtype> <connection-address>
    return f"IN {_address_type(address)} {address}"


def _attribute_line(attribute: Attribute) -> str:
    name, value = attribute
    return f"a={name}" if value is None else f"a={name}:{value}"


def parse_sdp(body: bytes) -> SessionDescription:
    """Parse an SDP body; SdpError if it is not SDP.

    Liberal where real offers differ from RFC 4566 without harm (LF line ends, no s= or
    t= line as in RFC 4475 mismatch02); strict on the lines answering depends on (v=,
    o=, m=, c=).
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SdpError("SDP is not UTF-8") from None
    lines = [line.rstrip("\r") for line in text.split("\n")]
    lines = [line for line in lines if line.strip()]
    if not lines or lines[0].strip() != f"v={SDP_VERSION}":
        raise SdpError("SDP must start with v=0")
    origin: Origin | None = None
    session_name = "-"
    timing: str | None = None
    connection: str | None = None
    session_attributes: list[Attribute] = []
    media: list[MediaDescription] = []
    for line in lines[1:]:
        # RFC 4566 section 5: <type>=<value>, <type> exactly one case-significant letter.
        kind, eq, value = line.partition("=")
        if not eq or len(kind) != 1 or not kind.isalpha():
            raise SdpError(f"malformed SDP line {line[:40]!r}")
        current = media[-1] if media else None
        if kind == "m":
            media.append(_parse_media(value))
        elif kind == "c":
            address = _parse_connection(value)
            if current is None:
                connection = address
            else:
                current.connection = address
        elif kind == "a":
            name, colon, attr_value = value.partition(":")
            attribute = (name.strip(), attr_value if colon else None)
            (session_attributes if current is None else current.attributes).append(attribute)
        elif current is None and kind == "o":
            origin = _parse_origin(value)
        elif current is None and kind == "s":
            session_name = value
        elif current is None and kind == "t" and timing is None:
            timing = value.strip()
    if origin is None:
        raise SdpError("SDP has no o= line")
    return SessionDescription(origin, session_name, connection, media, session_attributes,
                              timing or "0 0")


def _parse_origin(value: str) -> Origin:
    parts = value.split()
    if len(parts) != 6:
        raise SdpError(f"malformed o= line {value[:60]!r}")
    return Origin(*parts)


def _parse_media(value: str) -> MediaDescription:
    # RFC 4566 section 5.14: m=<media> <port>[/<number of ports>] <proto> <fmt> ...
    parts = value.split()
    if len(parts) < 4:
        raise SdpError(f"malformed m= line {value[:60]!r}")
    port = parts[1].partition("/")[0]
    if not (port.isdigit() and port.isascii()) or int(port) > MAX_PORT:
        raise SdpError(f"malformed port in m= line {value[:60]!r}")
    return MediaDescription(parts[0], int(port), parts[2], parts[3:])


def _parse_connection(value: str) -> str:
    # RFC 4566 section 5.7: c=<nettype> <addrtype> <connection-address>[/<ttl>][/<number>]
    parts = value.split()
    if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
        raise SdpError(f"malformed c= line {value[:60]!r}")
    return parts[2].partition("/")[0]


@dataclass(frozen=True)
class Negotiated:
    """What the answer agreed for the one audio stream we took.

    ``direction`` is the offer's, as the caller wrote it (``sendonly`` or ``inactive``:
    the caller put us on hold); ``answer_direction`` gives ours. ``ptime`` is the packet
    time the offer asked to receive, 20 ms when it did not say.
    """

    codec: str
    payload_type: int
    clock_rate: int
    remote_address: str
    remote_port: int
    telephone_event_pt: int | None
    ptime: int
    direction: str

    @property
    def answer_direction(self) -> str:
        """RFC 3264 section 6.1: what we answered, e.g. recvonly to a sendonly offer."""
        return ANSWER_DIRECTION[self.direction]


def answer_offer(offer: SessionDescription, *, local_address: str, rtp_port: int,
                 codecs: Sequence[str] = ("PCMU", "PCMA"), session_id: int,
                 session_version: int = 1) -> tuple[bytes, Negotiated]:
    """The answer to ``offer`` and what it agreed; NotAcceptable if nothing fits.

    ``codecs`` is our preference, best first: RFC 3264 section 6.1 lets the answerer
    pick any offered format, so ours wins over the offer's order.
    """
    unknown = [codec for codec in codecs if codec.upper() not in CODECS]
    if unknown:
        raise ValueError(f"cannot answer with {', '.join(unknown)}; known: {', '.join(CODECS)}")
    answer = SessionDescription(
        origin=Origin("trivox", str(session_id), str(session_version), "IN",
                      _address_type(local_address), local_address),
        session_name="trivox",
        connection=local_address,
    )
    negotiated: Negotiated | None = None
    for m in offer.media:
        chosen = None if negotiated is not None else _choose(m, offer, codecs)
        if chosen is None:
            # RFC 3264 section 6: a rejected stream keeps its place, with port 0.
            answer.media.append(MediaDescription(m.media, 0, m.proto, list(m.formats)))
            continue
        negotiated = chosen
        answer.media.append(_accepted_media(m, negotiated, rtp_port))
    if negotiated is None:
        raise NotAcceptable(f"no audio stream offers any of {', '.join(codecs)}")
    return answer.to_bytes(), negotiated


#: The dynamic payload type of telephone-event in our own offers (the common choice).
OFFER_EVENT_PAYLOAD_TYPE = 101


def make_offer(*, local_address: str, rtp_port: int, codecs: Sequence[str], session_id: int,
               session_version: int = 1) -> bytes:
    """Our offer: every codec of ``codecs`` in our order, with RFC 4733 events, sendrecv."""
    offered = [CODECS[name.upper()] for name in codecs]
    media = MediaDescription("audio", rtp_port, "RTP/AVP", [str(codec.payload_type) for codec in offered])
    media.attributes += [("rtpmap", f"{codec.payload_type} {codec.rtpmap}") for codec in offered]
    # RFC 4733 section 2.1: events run on the clock of the audio they go with, so each
    # clock rate we offer gets its own telephone-event type.
    for i, rate in enumerate(sorted({codec.clock_rate for codec in offered})):
        pt = OFFER_EVENT_PAYLOAD_TYPE + i
        media.formats.append(str(pt))
        media.attributes += [("rtpmap", f"{pt} {TELEPHONE_EVENT}/{rate}"), ("fmtp", f"{pt} {TELEPHONE_EVENTS}")]
    media.attributes += [("ptime", str(DEFAULT_PTIME)), ("sendrecv", None)]
    offer = SessionDescription(
        origin=Origin("trivox", str(session_id), str(session_version), "IN",
                      _address_type(local_address), local_address),
        session_name="trivox", connection=local_address, media=[media])
    return offer.to_bytes()


def read_answer(answer: SessionDescription, codecs: Sequence[str]) -> Negotiated:
    """What the caller's answer to our offer agreed (RFC 3264 section 7).

    The answerer picks among what we offered, so the first audio stream it accepted
    carries one of ``codecs``; NotAcceptable when it accepted none.
    """
    for m in answer.media:
        chosen = _choose(m, answer, codecs)
        if chosen is not None:
            return chosen
    raise NotAcceptable("the answer accepted no audio stream with a codec we offered")


def _accepted_media(offered: MediaDescription, negotiated: Negotiated, rtp_port: int) -> MediaDescription:
    pt = negotiated.payload_type
    media = MediaDescription("audio", rtp_port, offered.proto, [str(pt)])
    media.attributes.append(("rtpmap", f"{pt} {negotiated.codec}/{negotiated.clock_rate}"))
    event_pt = negotiated.telephone_event_pt
    if event_pt is not None:
        # RFC 4733 section 7.1.1: keep the offerer's payload type for the events.
        media.formats.append(str(event_pt))
        media.attributes += [("rtpmap", f"{event_pt} {TELEPHONE_EVENT}/{negotiated.clock_rate}"),
                             ("fmtp", f"{event_pt} {TELEPHONE_EVENTS}")]
    media.attributes += [("ptime", str(DEFAULT_PTIME)), (negotiated.answer_direction, None)]
    return media


def _choose(m: MediaDescription, offer: SessionDescription, codecs: Sequence[str]) -> Negotiated | None:
    """The best of our codecs that ``m`` offers, or None if we cannot take ``m``."""
    if m.media != "audio" or m.port == 0 or m.proto.upper() not in RTP_PROFILES:
        return None
    # RFC 4566 section 5.7: a media-level c= overrides the session-level one.
    address = m.connection or offer.connection
    if address is None:
        return None
    rtpmap = m.rtpmap()
    for wanted in (codec.upper() for codec in codecs):
        rate = CODECS[wanted].clock_rate
        pt = next((pt for pt in m.formats if _is_encoding(rtpmap.get(pt), wanted, rate)), None)
        if pt is None or not pt.isdigit():
            continue
        event_pt = next((p for p in m.formats if p.isdigit() and _is_encoding(rtpmap.get(p), TELEPHONE_EVENT, rate)),
                        None)
        # RFC 4566 section 6: a media-level attribute overrides a session-level one.
        offered_direction = _first_direction(m.attributes) or _first_direction(offer.attributes) or "sendrecv"
        ptime = next((int(v) for v in m.attribute("ptime") if v and v.strip().isdigit() and int(v) > 0), None)
        return Negotiated(
            codec=wanted,
            payload_type=int(pt),
            clock_rate=rate,
            remote_address=address,
            remote_port=m.port,
            telephone_event_pt=int(event_pt) if event_pt is not None else None,
            ptime=ptime or DEFAULT_PTIME,
            direction=offered_direction,
        )
    return None


def _is_encoding(mapped: tuple[str, int] | None, name: str, rate: int) -> bool:
    # Encoding names are case-insensitive (RFC 4855 section 3); peers send "pcmu".
    return mapped is not None and mapped[0].lower() == name.lower() and mapped[1] == rate


def _first_direction(attributes: list[Attribute]) -> str | None:
    return next((name for name, _ in attributes if name in DIRECTIONS), None)
