"""SDP, sans-IO: parse an offer (RFC 4566) and build the answer (RFC 3264).

trivox answers; it does not offer yet. The answer keeps the offer's m-lines in order
(RFC 3264 section 6), accepts the first audio stream that has a codec we speak, chosen
by *our* preference among what the offer lists, and rejects every other stream with
port 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

#: RFC 3551 section 6: static payload types of the codecs we speak.
STATIC_PAYLOAD_TYPES = {0: ("PCMU", 8000), 8: ("PCMA", 8000)}
DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")
#: RFC 3264 section 6.1: the answer's direction for each offered one.
ANSWER_DIRECTION = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly",
                    "inactive": "inactive"}
DEFAULT_PTIME = 20


class SdpError(ValueError):
    """The body is not SDP we can read (answer 400)."""


class NotAcceptable(SdpError):
    """No stream we can take (answer 488)."""


@dataclass
class MediaDescription:
    media: str
    port: int
    proto: str
    formats: list[str]
    connection: str | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)

    def attribute(self, name: str) -> list[str | None]:
        return [value for key, value in self.attributes if key == name]

    def rtpmap(self) -> dict[str, tuple[str, int]]:
        """Payload type -> (encoding name, clock rate), static types included."""
        mapping = {str(pt): codec for pt, codec in STATIC_PAYLOAD_TYPES.items()}
        for value in self.attribute("rtpmap"):
            pt, _, encoding = (value or "").partition(" ")
            name, _, rate = encoding.partition("/")
            if rate.split("/")[0].isdigit():
                mapping[pt] = (name, int(rate.split("/")[0]))
        return mapping

    @property
    def direction(self) -> str | None:
        found = [key for key, _ in self.attributes if key in DIRECTIONS]
        return found[0] if found else None


@dataclass
class SessionDescription:
    origin: str = "- 0 0 IN IP4 0.0.0.0"
    session_name: str = "-"
    connection: str | None = None
    attributes: list[tuple[str, str | None]] = field(default_factory=list)
    media: list[MediaDescription] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        lines = ["v=0", f"o={self.origin}", f"s={self.session_name}"]
        if self.connection:
            lines.append(f"c={_connection_line(self.connection)}")
        lines.append("t=0 0")
        lines += [_attribute_line(a) for a in self.attributes]
        for m in self.media:
            lines.append(f"m={m.media} {m.port} {m.proto} {' '.join(m.formats)}")
            if m.connection:
                lines.append(f"c={_connection_line(m.connection)}")
            lines += [_attribute_line(a) for a in m.attributes]
        return ("\r\n".join(lines) + "\r\n").encode()


def _connection_line(address: str) -> str:
    return f"IN {'IP6' if ':' in address else 'IP4'} {address}"


def _attribute_line(attribute: tuple[str, str | None]) -> str:
    name, value = attribute
    return f"a={name}" if value is None else f"a={name}:{value}"


def parse_sdp(body: bytes) -> SessionDescription:
    """RFC 4566 section 5: ``<type>=<value>`` lines; we keep what answering needs."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SdpError("SDP is not UTF-8") from None
    lines = [line.strip() for line in text.replace("\r\n", "\n").split("\n") if line.strip()]
    if not lines or lines[0] != "v=0":
        raise SdpError("SDP must start with v=0")
    session = SessionDescription()
    current: MediaDescription | None = None
    for line in lines[1:]:
        kind, eq, value = line.partition("=")
        if not eq or len(kind) != 1:
            raise SdpError(f"malformed SDP line {line[:40]!r}")
        if kind == "m":
            parts = value.split()
            if len(parts) < 4 or not parts[1].split("/")[0].isdigit():
                raise SdpError(f"malformed m= line {value[:40]!r}")
            current = MediaDescription(parts[0], int(parts[1].split("/")[0]), parts[2], parts[3:])
            session.media.append(current)
        elif kind == "c":
            parts = value.split()
            if len(parts) != 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
                raise SdpError(f"malformed c= line {value[:40]!r}")
            address = parts[2].split("/")[0]
            if current is None:
                session.connection = address
            else:
                current.connection = address
        elif kind == "a":
            name, colon, attr_value = value.partition(":")
            attribute = (name, attr_value if colon else None)
            (session.attributes if current is None else current.attributes).append(attribute)
        elif kind == "o" and current is None:
            session.origin = value
        elif kind == "s" and current is None:
            session.session_name = value
    return session


@dataclass(frozen=True)
class Negotiated:
    """What the answer agreed for the one audio stream we took."""

    codec: str
    payload_type: int
    clock_rate: int
    remote_address: str
    remote_port: int
    telephone_event_pt: int | None
    ptime: int
    direction: str


def answer_offer(offer: SessionDescription, *, local_address: str, rtp_port: int,
                 codecs: Sequence[str] = ("PCMU", "PCMA"), session_id: int,
                 session_version: int = 1) -> tuple[bytes, Negotiated]:
    """The answer to ``offer`` and what it agreed; NotAcceptable if nothing fits."""
    answer = SessionDescription(
        origin=f"trivox {session_id} {session_version} {_connection_line(local_address)}",
        session_name="trivox",
        connection=local_address,
    )
    negotiated: Negotiated | None = None
    for m in offer.media:
        chosen = None if negotiated is not None else _choose(m, codecs, offer.connection)
        if chosen is None:
            # RFC 3264 section 6: a rejected stream keeps its place with port 0.
            answer.media.append(MediaDescription(m.media, 0, m.proto, m.formats[:1]))
            continue
        negotiated, accepted = chosen
        accepted_media = MediaDescription("audio", rtp_port, m.proto, [str(negotiated.payload_type)])
        accepted_media.attributes.append(("rtpmap", f"{negotiated.payload_type} {negotiated.codec}/8000"))
        if negotiated.telephone_event_pt is not None:
            pt = negotiated.telephone_event_pt
            accepted_media.formats.append(str(pt))
            accepted_media.attributes += [("rtpmap", f"{pt} telephone-event/8000"), ("fmtp", f"{pt} 0-16")]
        accepted_media.attributes += [("ptime", str(DEFAULT_PTIME)), (ANSWER_DIRECTION[negotiated.direction], None)]
        answer.media.append(accepted_media)
    if negotiated is None:
        raise NotAcceptable(f"no audio stream offers any of {', '.join(codecs)}")
    return answer.to_bytes(), negotiated


def _choose(m: MediaDescription, codecs: Sequence[str], session_connection: str | None
            ) -> tuple[Negotiated, MediaDescription] | None:
    if m.media != "audio" or m.port == 0 or m.proto.upper() not in ("RTP/AVP", "RTP/AVPF"):
        return None
    address = m.connection or session_connection
    if address is None:
        return None
    rtpmap = m.rtpmap()
    offered = [(pt, rtpmap.get(pt)) for pt in m.formats]
    for wanted in codecs:
        for pt, codec in offered:
            if codec is not None and codec[0].upper() == wanted.upper() and codec[1] == 8000:
                events = [int(p) for p, c in offered if c is not None and c[0].lower() == "telephone-event"
                          and c[1] == 8000]
                ptime = (m.attribute("ptime") or [None])[0] or ""
                direction = m.direction or "sendrecv"
                return Negotiated(
                    codec=wanted.upper(), payload_type=int(pt), clock_rate=8000,
                    remote_address=address, remote_port=m.port,
                    telephone_event_pt=events[0] if events else None,
                    ptime=int(ptime) if ptime.isdigit() else DEFAULT_PTIME,
                    direction=direction,
                ), m
    return None
