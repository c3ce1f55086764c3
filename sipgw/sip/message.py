"""SIP messages, sans-IO: parse and serialize (RFC 3261 sections 7, 20 and 25).

``parse_message`` takes one UDP datagram and returns a ``Request`` or a ``Response``.
Errors come in the two kinds SIP needs (h11's split between "you" and "the peer"):

- ``ParseError``: not a SIP message we can reason about. Drop it and log.
- ``BadRequest``: a request that parsed far enough to be answered, but is invalid. Answer
  with ``status`` (400, or 505 for another SIP version) and ``reason``.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

#: RFC 3261 section 18.1.1 lets UDP messages grow to 65,535 bytes; nothing bigger is SIP.
MAX_MESSAGE_SIZE = 65535
#: RFC 3261 section 8.1.1.7: the branch of every RFC 3261 element starts with this.
BRANCH_COOKIE = "z9hG4bK"
SIP_VERSION = "SIP/2.0"
MAX_CSEQ = 2**32 - 1

# RFC 3261 section 7.3.3 compact forms, plus the common extension ones.
COMPACT = {
    "i": "Call-ID", "m": "Contact", "e": "Content-Encoding", "l": "Content-Length",
    "c": "Content-Type", "f": "From", "s": "Subject", "k": "Supported", "t": "To",
    "v": "Via", "o": "Event", "u": "Allow-Events", "r": "Refer-To", "b": "Referred-By",
    "x": "Session-Expires", "y": "Identity", "a": "Accept-Contact", "j": "Reject-Contact",
    "d": "Request-Disposition",
}
CANONICAL = {name.lower(): name for name in (
    "Accept", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow", "Authentication-Info",
    "Authorization", "Call-ID", "Call-Info", "Contact", "Content-Disposition", "Content-Encoding",
    "Content-Language", "Content-Length", "Content-Type", "CSeq", "Date", "Error-Info", "Expires",
    "From", "In-Reply-To", "Max-Forwards", "Min-Expires", "MIME-Version", "Organization",
    "Priority", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "Record-Route",
    "Reply-To", "Require", "Retry-After", "Route", "Server", "Subject", "Supported", "Timestamp",
    "To", "Unsupported", "User-Agent", "Via", "Warning", "WWW-Authenticate", "Event",
    "Allow-Events", "Refer-To", "Referred-By", "Session-Expires", "Min-SE", "RSeq", "RAck",
    "P-Asserted-Identity", "Privacy", "Reason", "Path", "Service-Route",
)}
#: Headers whose grammar is a comma-separated list (RFC 3261 section 7.3.1): get_all splits them.
LIST_HEADERS = frozenset(name.lower() for name in (
    "Via", "Contact", "Route", "Record-Route", "Allow", "Supported", "Require", "Proxy-Require",
    "Unsupported", "Accept", "Accept-Encoding", "Accept-Language", "Content-Encoding",
    "Content-Language", "In-Reply-To", "Allow-Events", "Path", "Service-Route", "Warning",
    "Call-Info", "Alert-Info", "Error-Info", "Reason", "P-Asserted-Identity",
))
#: RFC 3261 section 8.2 and RFC 4475 section 3.3.8: at most one of each.
SINGLE_HEADERS = ("Call-ID", "To", "From", "CSeq", "Max-Forwards", "Content-Length")

REASON_PHRASES = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    406: "Not Acceptable", 407: "Proxy Authentication Required", 408: "Request Timeout",
    415: "Unsupported Media Type", 416: "Unsupported URI Scheme", 420: "Bad Extension",
    423: "Interval Too Brief", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 483: "Too Many Hops", 486: "Busy Here",
    487: "Request Terminated", 488: "Not Acceptable Here", 491: "Request Pending",
    500: "Server Internal Error", 501: "Not Implemented", 503: "Service Unavailable",
    505: "Version Not Supported", 513: "Message Too Large", 603: "Decline",
}

# RFC 3261 section 25.1:
#   token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
#   Request-Line = Method SP Request-URI SP SIP-Version CRLF
_REQUEST_LINE = re.compile(rf"^({TOKEN}) (\S+) (SIP/\d+\.\d+)$")
# What a request line with stray whitespace looks like (RFC 4475 lwsruri, lwsstart, trws):
# recognisably a request, so it gets a 400 rather than silence.
_LOOSE_REQUEST_LINE = re.compile(rf"^({TOKEN})\s+(.+?)\s+(SIP/\d+\.\d+)\s*$")
#   Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF
_STATUS_LINE = re.compile(r"^(SIP/\d+\.\d+) (\d+) ?(.*)$")
#   header-name = token; HCOLON = *( SP / HTAB ) ":" SWS
_HEADER_LINE = re.compile(rf"^({TOKEN})[ \t]*:[ \t]*(.*)$")


class SipError(Exception):
    """Base of the errors a message can cause."""


class ParseError(SipError):
    """Not a SIP message we can answer: drop it and log."""


class BadRequest(SipError):
    """A request that must be answered with an error ``status`` (400 unless said).

    ``request`` holds what could be parsed (start line and headers) when the message
    itself is broken, so the error response can still carry Via, Call-ID and the rest.
    """

    def __init__(self, reason: str, status: int = 400, request: Request | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.request = request


def canonical_name(name: str) -> str:
    lowered = name.lower()
    if lowered in COMPACT:
        return COMPACT[lowered]
    return CANONICAL.get(lowered, name)


class Headers:
    """Ordered, case-insensitive multi-map of header fields, as they appear on the wire."""

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = []
        for name, value in items:
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        self._items.append((canonical_name(name), value))

    def get(self, name: str) -> str | None:
        """The first value of ``name`` (for list headers: the whole first line)."""
        key = canonical_name(name).lower()
        for item_name, value in self._items:
            if item_name.lower() == key:
                return _first_element(value) if key in LIST_HEADERS else value
        return None

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` in order; list headers are split on top-level commas."""
        key = canonical_name(name).lower()
        values: list[str] = []
        for item_name, value in self._items:
            if item_name.lower() == key:
                values += _split_commas(value) if key in LIST_HEADERS else [value]
        return values

    def count(self, name: str) -> int:
        """Header lines (not list elements) named ``name``."""
        key = canonical_name(name).lower()
        return sum(1 for item_name, _ in self._items if item_name.lower() == key)

    def set(self, name: str, value: str) -> None:
        """Replace every ``name`` with one value, where the first one stood."""
        key = canonical_name(name).lower()
        index = next((i for i, (n, _) in enumerate(self._items) if n.lower() == key), len(self._items))
        self.remove(name)
        self._items.insert(index, (canonical_name(name), value))

    def remove(self, name: str) -> None:
        key = canonical_name(name).lower()
        self._items = [(n, v) for n, v in self._items if n.lower() != key]

    def copy(self) -> Headers:
        return Headers(self._items)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.count(name) > 0

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._items))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


@dataclass
class Request:
    method: str
    uri: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = SIP_VERSION

    def to_bytes(self) -> bytes:
        return _serialize(f"{self.method} {self.uri} {self.version}", self.headers, self.body)


@dataclass
class Response:
    status: int
    reason: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = SIP_VERSION

    def to_bytes(self) -> bytes:
        return _serialize(f"{self.version} {self.status} {self.reason}", self.headers, self.body)


def _serialize(start_line: str, headers: Headers, body: bytes) -> bytes:
    lines = [start_line]
    lines += [f"{name}: {value}" for name, value in headers if name != "Content-Length"]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


# --- parsing ------------------------------------------------------------------------


def parse_message(data: bytes) -> Request | Response:
    """Parse one datagram (RFC 3261 section 18.3 framing for UDP)."""
    if len(data) > MAX_MESSAGE_SIZE:
        raise ParseError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_SIZE}")
    data = data.lstrip(b"\r\n")  # RFC 5626 keepalives and stray CRLFs before the start line
    if not data:
        raise ParseError("empty datagram")
    head, body = _split_head(data)
    text = head.decode("utf-8", "surrogateescape")
    lines = _unfold(text.replace("\r\n", "\n").split("\n"))
    start, header_lines = lines[0], lines[1:]

    request_match = _REQUEST_LINE.match(start) or _LOOSE_REQUEST_LINE.match(start)
    status_match = None if request_match else _STATUS_LINE.match(start)
    if request_match is None and status_match is None:
        raise ParseError(f"not a SIP start line: {start[:60]!r}")
    headers = Headers()
    problem: str | None = None
    for line in header_lines:
        match = _HEADER_LINE.match(line)
        if match is None:
            if status_match is not None:
                raise ParseError(f"malformed header line {line[:40]!r}")
            problem = problem or f"malformed header line {line[:40]!r}"
            continue
        headers.add(match.group(1), match.group(2).strip())

    if status_match is not None:
        version, code, reason = status_match.groups()
        status = int(code) if len(code) <= 3 else 0
        if not 100 <= status <= 699:
            raise ParseError(f"status code {code} is out of range")
        if version != SIP_VERSION:
            raise ParseError(f"unsupported version {version}")
        try:
            body = _frame_body(headers, body)
        except BadRequest as exc:
            raise ParseError(exc.reason) from None
        return Response(status, reason.encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
                        headers, body, version)

    assert request_match is not None
    method, uri, version = request_match.groups()
    request = Request(method, uri, headers, b"", version)
    if request_match.re is _LOOSE_REQUEST_LINE:
        problem = problem or "malformed Request-Line (stray whitespace)"
    if version != SIP_VERSION:
        raise BadRequest(f"SIP version {version} is not supported", 505, request)
    if problem is not None:
        raise BadRequest(problem, 400, request)
    try:
        request.body = _frame_body(headers, body)
    except BadRequest as exc:
        raise BadRequest(exc.reason, exc.status, request) from None
    return request


def _split_head(data: bytes) -> tuple[bytes, bytes]:
    for separator in (b"\r\n\r\n", b"\n\n"):
        index = data.find(separator)
        if index >= 0:
            return data[:index], data[index + len(separator):]
    # RFC 4475 baddn: no empty line; over UDP the message ends with the datagram.
    return data.rstrip(b"\r\n"), b""


def _unfold(lines: list[str]) -> list[str]:
    """RFC 3261 section 7.3.1: a line starting with SP or HTAB continues the previous one."""
    out: list[str] = []
    for line in lines:
        if line[:1] in (" ", "\t") and out:
            out[-1] = out[-1].rstrip() + " " + line.strip()
        elif line:
            out.append(line)
    return out


def _frame_body(headers: Headers, rest: bytes) -> bytes:
    values = headers.get_all("Content-Length")
    if not values:
        return rest  # RFC 3261 section 18.3: optional over UDP; the datagram is the message
    if len(set(values)) > 1 or headers.count("Content-Length") > 1:
        raise BadRequest("more than one Content-Length")
    text = values[0].strip()
    if not text.isdigit():
        raise BadRequest(f"invalid Content-Length {text[:20]!r}")
    length = int(text)
    if length > len(rest):
        raise BadRequest(f"Content-Length {length} is larger than the {len(rest)}-byte body")
    return rest[:length]  # trailing octets are not part of the message (RFC 4475 dblreq)


def _split_commas(value: str) -> list[str]:
    """Split on commas outside quotes and <...> (RFC 3261 section 7.3.1)."""
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    angle = 0
    for char in value:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif not quoted and char == "<":
            angle += 1
        elif not quoted and char == ">":
            angle = max(0, angle - 1)
        elif char == "," and not quoted and angle == 0:
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    parts.append("".join(current).strip())
    return [part for part in parts if part]


def _first_element(value: str) -> str:
    elements = _split_commas(value)
    return elements[0] if elements else value


# --- validation (RFC 3261 section 8.2) ----------------------------------------------


def validate_request(request: Request) -> None:
    """Raise BadRequest naming the first problem that makes ``request`` unanswerable."""
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        if name not in request.headers:
            raise BadRequest(f"Missing {name} header")
    # Request-URI = SIP-URI / SIPS-URI / absoluteURI: never in <>, never with spaces
    # (RFC 3261 section 25.1; RFC 4475 ltgtruri).
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9+\-.]*:[^\s<>]+", request.uri):
        raise BadRequest(f"malformed Request-URI {request.uri[:60]!r}")
    for name in SINGLE_HEADERS:
        if request.headers.count(name) > 1 or len(request.headers.get_all(name)) > 1:
            raise BadRequest(f"More than one {name} header")
    cseq = parse_cseq(request.headers.get("CSeq") or "")
    if cseq.method != request.method:
        raise BadRequest(f"CSeq method {cseq.method} does not match {request.method}")
    for value in request.headers.get_all("Via"):
        via = parse_via(value)
        if not via.host:
            raise BadRequest("Via without a host")
    for name in ("From", "To"):
        parse_name_addr(request.headers.get(name) or "")
    max_forwards = request.headers.get("Max-Forwards")
    if max_forwards is not None and not max_forwards.strip().isdigit():
        raise BadRequest(f"invalid Max-Forwards {max_forwards[:20]!r}")


def make_response(request: Request, status: int, reason: str | None = None, *,
                  to_tag: str | None = None, headers: Iterable[tuple[str, str]] = (),
                  body: bytes = b"") -> Response:
    """RFC 3261 section 8.2.6.2: a response carrying the request's Via, From, To, Call-ID, CSeq.

    A header the request lacks is left out, so a 400 for a missing Call-ID can still go out.
    """
    out = Headers()
    for value in request.headers.get_all("Via"):
        out.add("Via", value)
    for name in ("From", "To", "Call-ID", "CSeq"):
        found = request.headers.get(name)
        if found is None:
            continue
        value = found
        if name == "To" and to_tag is not None:
            to = parse_name_addr(value)
            if to.tag is None:
                value = str(to.with_tag(to_tag))
        out.add(name, value)
    for name, value in headers:
        out.add(name, value)
    return Response(status, reason or REASON_PHRASES.get(status, "Unknown"), out, body)


# --- header values ------------------------------------------------------------------


def _parse_params(text: str) -> dict[str, str | None]:
    """``;name=value;flag`` (RFC 3261 generic-param), names lower-cased."""
    params: dict[str, str | None] = {}
    for part in _split_outside_quotes(text, ";"):
        part = part.strip()
        if not part:
            raise BadRequest("empty parameter")
        name, eq, value = part.partition("=")
        name = name.strip()
        if not re.fullmatch(TOKEN, name):
            raise BadRequest(f"invalid parameter name {name[:20]!r}")
        params[name.lower()] = value.strip() if eq else None
    return params


def _format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


# Via = sent-protocol LWS sent-by *( SEMI via-params )  (RFC 3261 section 20.42)
#   sent-protocol = protocol-name SLASH protocol-version SLASH transport
#   sent-by = host [ COLON port ]
_VIA = re.compile(
    rf"^SIP\s*/\s*2\.0\s*/\s*({TOKEN})\s+(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?:\s*:\s*(\d{{1,5}}))?\s*(;.*)?$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Via:
    transport: str
    host: str
    port: int | None
    params: dict[str, str | None] = field(default_factory=dict, hash=False)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port is not None else ""
        return f"SIP/2.0/{self.transport} {host}{port}{_format_params(self.params)}"


def parse_via(value: str) -> Via:
    match = _VIA.match(value.strip())
    if match is None:
        raise BadRequest(f"malformed Via {value[:60]!r}")
    transport, host, port, params = match.groups()
    port_number = int(port) if port else None
    if port_number is not None and port_number > 65535:
        raise BadRequest(f"Via port {port_number} is out of range")
    return Via(transport.upper(), host.strip("[]"), port_number, _parse_params(params[1:]) if params else {})


@dataclass(frozen=True)
class CSeq:
    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


def parse_cseq(value: str) -> CSeq:
    # CSeq = "CSeq" HCOLON 1*DIGIT LWS Method  (RFC 3261 section 20.16)
    match = re.fullmatch(rf"\s*(\d+)\s+({TOKEN})\s*", value)
    if match is None:
        raise BadRequest(f"malformed CSeq {value[:40]!r}")
    number = int(match.group(1))
    if number > MAX_CSEQ:
        raise BadRequest(f"CSeq number {match.group(1)} is larger than 2**32-1")
    return CSeq(number, match.group(2))


@dataclass(frozen=True)
class NameAddr:
    """From, To, Contact, Route values: ``"display" <uri>;params`` or a bare ``uri;params``."""

    display: str | None
    uri: str
    params: dict[str, str | None] = field(default_factory=dict, hash=False)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def with_tag(self, tag: str) -> NameAddr:
        return NameAddr(self.display, self.uri, {**self.params, "tag": tag})

    def __str__(self) -> str:
        display = f"{self.display} " if self.display else ""
        return f"{display}<{self.uri}>{_format_params(self.params)}"


def parse_name_addr(value: str) -> NameAddr:
    """RFC 3261 section 20.10: with <>, params after > belong to the header; without <>,
    everything after the first ; is header params, never URI params."""
    text = value.strip()
    display: str | None = None
    if text.startswith('"'):
        end = _closing_quote(text)
        display, text = text[:end + 1], text[end + 1:].strip()
    if "<" in text:
        before, _, rest = text.partition("<")
        if before.strip():
            if display is not None:
                raise BadRequest(f"malformed name-addr {value[:60]!r}")
            display = before.strip()
        uri, closed, params = rest.partition(">")
        if not closed:
            raise BadRequest(f"unclosed < in {value[:60]!r}")
        uri = uri.strip()
        params = params.strip()
        if params and not params.startswith(";"):
            raise BadRequest(f"junk after > in {value[:60]!r}")
        parsed = _parse_params(params[1:]) if params else {}
    else:
        if display is not None:
            raise BadRequest(f"display name without <uri> in {value[:60]!r}")
        uri, _, params = text.partition(";")
        uri = uri.strip()
        parsed = _parse_params(params) if params else {}
    if not uri or ":" not in uri or any(c.isspace() for c in uri):
        raise BadRequest(f"malformed URI in {value[:60]!r}")
    return NameAddr(display, uri, parsed)


def _closing_quote(text: str) -> int:
    escaped = False
    for index in range(1, len(text)):
        char = text[index]
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            return index
    raise BadRequest("unterminated quoted string")


@dataclass(frozen=True)
class SipUri:
    """sip: and sips: URIs (RFC 3261 section 19.1)."""

    scheme: str
    user: str | None
    password: str | None
    host: str
    port: int | None
    params: dict[str, str | None] = field(default_factory=dict, hash=False)
    headers: dict[str, str] = field(default_factory=dict, hash=False)

    def __str__(self) -> str:
        userinfo = ""
        if self.user is not None:
            userinfo = self.user + (f":{self.password}" if self.password is not None else "") + "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = f":{self.port}" if self.port is not None else ""
        query = "&".join(f"{k}={v}" for k, v in self.headers.items())
        return f"{self.scheme}:{userinfo}{host}{port}{_format_params(self.params)}" + (f"?{query}" if query else "")


_HOSTPORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?::(\d{1,5}))?$")


def parse_uri(value: str) -> SipUri:
    scheme, colon, rest = value.strip().partition(":")
    if not colon or scheme.lower() not in ("sip", "sips"):
        raise ParseError(f"not a sip or sips URI: {value[:60]!r}")
    rest, _, query = rest.partition("?")
    userinfo, at, hostpart = rest.rpartition("@")
    if not at:
        hostpart, userinfo = rest, ""
    hostport, _, params = hostpart.partition(";")
    match = _HOSTPORT.match(hostport)
    if match is None:
        raise ParseError(f"bad host in URI {value[:60]!r}")
    user, password = (None, None)
    if at:
        user, has_password, password_text = userinfo.partition(":")
        password = password_text if has_password else None
    headers = dict(item.partition("=")[::2] for item in query.split("&") if item) if query else {}
    return SipUri(scheme.lower(), user, password, match.group(1).strip("[]"),
                  int(match.group(2)) if match.group(2) else None,
                  _parse_params(params) if params else {}, headers)


# --- identifiers --------------------------------------------------------------------


def new_tag() -> str:
    """RFC 3261 section 19.3: at least 32 bits of randomness."""
    return secrets.token_hex(6)


def new_branch() -> str:
    return BRANCH_COOKIE + secrets.token_hex(8)


def new_call_id(host: str) -> str:
    return f"{secrets.token_hex(12)}@{host}"
