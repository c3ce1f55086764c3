"""SIP messages, sans-IO: parse and serialize (RFC 3261 sections 7, 18.3, 20 and 25).

``parse_message`` takes one UDP datagram and returns a ``Request`` or a ``Response``;
``StreamParser`` does the same for a TCP byte stream. Errors come in the two kinds a SIP
element needs (h11's split between "you" and "the peer"):

- ``ParseError``: not a SIP message we can reason about. Drop it and log.
- ``BadRequest``: a request that parsed far enough to be answered, but is invalid. Answer
  with ``status`` (400, or 505 for another SIP version) and ``reason``; ``request`` holds
  what did parse, so the answer can carry its Via, From, To, Call-ID and CSeq.

The parser is liberal where RFC 4475 asks elements to be (LWS and folding anywhere,
unknown headers and parameters, leading zeros, display names without quotes) and strict
where a mistake would mis-frame or mis-route (Content-Length, the start line, CSeq, Via).
Values are kept as text; the typed views (``Via``, ``NameAddr``, ``CSeq``, ``SipUri``)
are parsed on demand by whoever needs them.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

#: RFC 3261 section 18.1.1: a UDP datagram carries at most 65,535 bytes; we also cap a
#: message on a stream there, so a peer cannot make us buffer without bound.
MAX_MESSAGE_SIZE = 65535
SIP_VERSION = "SIP/2.0"
#: RFC 3261 section 8.1.1.7: the branch of every RFC 3261 element starts with this.
BRANCH_COOKIE = "z9hG4bK"
#: RFC 3261 section 8.1.1.5: "The sequence number MUST be expressible as a 32-bit unsigned integer".
MAX_CSEQ = 2**32 - 1
MAX_PORT = 65535
#: Random bytes in generated identifiers. RFC 3261 section 19.3 asks for at least 32 bits
#: in a tag; section 8.1.1.4 for a cryptographically random Call-ID.
TAG_BYTES = 8
BRANCH_BYTES = 12
CALL_ID_BYTES = 16

# RFC 3261 section 7.3.3 compact forms, plus those registered by later RFCs
# (RFC 3265 o/u, RFC 3515 r, RFC 3892 b, RFC 4028 x, RFC 4474 y, RFC 3841 a/j/d).
COMPACT_FORMS = {
    "i": "Call-ID", "m": "Contact", "e": "Content-Encoding", "l": "Content-Length",
    "c": "Content-Type", "f": "From", "s": "Subject", "k": "Supported", "t": "To",
    "v": "Via", "o": "Event", "u": "Allow-Events", "r": "Refer-To", "b": "Referred-By",
    "x": "Session-Expires", "y": "Identity", "a": "Accept-Contact", "j": "Reject-Contact",
    "d": "Request-Disposition",
}
#: Spelling used when we write a header we know (RFC 3261 section 20 and common extensions).
CANONICAL_NAMES = {name.lower(): name for name in (
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
    "Allow-Events", "Authentication-Info", "Authorization", "Call-ID", "Call-Info", "Contact",
    "Content-Disposition", "Content-Encoding", "Content-Language", "Content-Length",
    "Content-Type", "CSeq", "Date", "Error-Info", "Event", "Expires", "From", "Identity",
    "In-Reply-To", "Max-Forwards", "Min-Expires", "Min-SE", "MIME-Version", "Organization",
    "P-Asserted-Identity", "Path", "Priority", "Privacy", "Proxy-Authenticate",
    "Proxy-Authorization", "Proxy-Require", "RAck", "Reason", "Record-Route", "Refer-To",
    "Referred-By", "Reject-Contact", "Reply-To", "Request-Disposition", "Require",
    "Retry-After", "Route", "RSeq", "Server", "Service-Route", "Session-Expires", "Subject",
    "Supported", "Timestamp", "To", "Unsupported", "User-Agent", "Via", "Warning",
    "WWW-Authenticate",
)}
#: RFC 3261 section 7.3.1: headers whose grammar is a comma-separated list, so several
#: lines and one line with commas mean the same thing. ``Headers.get_all`` splits these.
LIST_HEADERS = frozenset(name.lower() for name in (
    "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info", "Allow",
    "Allow-Events", "Call-Info", "Contact", "Content-Encoding", "Content-Language",
    "Error-Info", "In-Reply-To", "P-Asserted-Identity", "Path", "Proxy-Require", "Reason",
    "Record-Route", "Reject-Contact", "Require", "Route", "Service-Route", "Supported",
    "Unsupported", "Via", "Warning",
))
#: RFC 3261 section 8.1.1: every request carries these ("Max-Forwards" too, but RFC 2543
#: clients omit it and RFC 4475 inv2543 asks us to accept that).
MANDATORY_HEADERS = ("To", "From", "CSeq", "Call-ID", "Via")
#: RFC 3261 section 7.3.1 and RFC 4475 section 3.3.8: at most one of each.
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
#: RFC 3261 section 7.2: what each class of status code means, for codes not in the table.
STATUS_CLASSES = {1: "Provisional", 2: "Success", 3: "Redirection", 4: "Request Failure",
                  5: "Server Failure", 6: "Global Failure"}

# --- grammar (RFC 3261 section 25.1) ---------------------------------------------------

#   token = 1*(alphanum / "-" / "." / "!" / "%" / "*" / "_" / "+" / "`" / "'" / "~")
TOKEN = r"[A-Za-z0-9\-.!%*_+`'~]+"
#   quoted-string = SWS DQUOTE *(qdtext / quoted-pair ) DQUOTE
#   quoted-pair = "\" (%x00-09 / %x0B-0C / %x0E-7F)
QUOTED_STRING = r'"(?:[^"\\\r\n]|\\[^\r\n])*"'
#   LWS = [*WSP CRLF] 1*WSP ; after unfolding, a run of SP / HTAB
_LWS_OR_QUOTED = re.compile(rf"({QUOTED_STRING})|[ \t]+")
#   Request-Line = Method SP Request-URI SP SIP-Version CRLF     (section 7.1)
#   SIP-Version = "SIP" "/" 1*DIGIT "." 1*DIGIT
_REQUEST_LINE = re.compile(rf"({TOKEN}) (\S+) (SIP/\d+\.\d+)", re.IGNORECASE)
# A request line with stray whitespace (RFC 4475 lwsruri, lwsstart, trws): recognisably a
# request, so it is answered with 400 rather than dropped.
_LOOSE_REQUEST_LINE = re.compile(rf"({TOKEN})\s+(.+?)\s+(SIP/\d+\.\d+)\s*", re.IGNORECASE)
#   Status-Line = SIP-Version SP Status-Code SP Reason-Phrase CRLF     (section 7.2)
#   Status-Code = 3DIGIT ; checked after the match, so 4294967301 is named in the error
_STATUS_LINE = re.compile(r"(SIP/\d+\.\d+) (\d+)(?: (.*))?", re.IGNORECASE)
#   message-header = header-name HCOLON header-value ; HCOLON = *( SP / HTAB ) ":" SWS
_HEADER_LINE = re.compile(rf"({TOKEN})[ \t]*:([^\r\n]*)")
#   The header section ends at the first empty line; bare LF is accepted for CRLF.
_HEAD_END = re.compile(rb"\r?\n\r?\n")
#   Request-URI = SIP-URI / SIPS-URI / absoluteURI ; absoluteURI = scheme ":" ...
#   scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ). Never in <>, never with LWS.
_ABSOLUTE_URI = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*:[^\s<>\"]+")
#   generic-param = token [ EQUAL gen-value ] ; gen-value = token / host / quoted-string
#   (host may be an IPv6 address: Via received=2001:db8::1 is legal, section 18.2.1)
_GEN_VALUE = re.compile(rf"[A-Za-z0-9\-.!%*_+`'~:\[\]]+|{QUOTED_STRING}")


class SipError(Exception):
    """Base of the errors a message can cause."""


class ParseError(SipError):
    """Not a SIP message we can answer: drop it and log."""


class BadRequest(SipError):
    """A request that must be answered with an error ``status`` (400 unless said).

    ``reason`` names the problem in words fit for a log line or a reason phrase.
    ``request`` holds what could be parsed when the message itself is broken, so the
    error response can still carry Via, Call-ID and the rest (RFC 3261 section 8.2.6).
    """

    def __init__(self, reason: str, status: int = 400, request: Request | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.request = request


# --- headers -------------------------------------------------------------------------


def canonical_name(name: str) -> str:
    """The long form of a compact name, the usual spelling of a known one, else ``name``."""
    lowered = name.lower()
    return COMPACT_FORMS.get(lowered) or CANONICAL_NAMES.get(lowered, name)


def _normalize_value(value: str) -> str:
    """RFC 3261 section 7.3.1: any LWS may be replaced by one SP; quoted strings are kept."""
    return _LWS_OR_QUOTED.sub(lambda m: m.group(1) or " ", value).strip()


class Headers:
    """Ordered, case-insensitive multi-map of header fields, in wire order.

    Names are stored in canonical form (``v`` and ``VIA`` become ``Via``); values are
    stored with their LWS collapsed, so equal headers compare equal however they were
    folded on the wire.
    """

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str, str]] = []  # (lower-case key, name, value)
        for name, value in items:
            self.add(name, value)

    def add(self, name: str, value: str) -> None:
        """Append a header line. A name that is not a token or a value with CR/LF would
        inject headers when serialized, so both are refused with ValueError."""
        if not re.fullmatch(TOKEN, name):
            raise ValueError(f"header name {name!r} is not a token")
        if "\r" in value or "\n" in value:
            raise ValueError(f"header value for {name} contains CR or LF")
        canonical = canonical_name(name)
        self._items.append((canonical.lower(), canonical, _normalize_value(value)))

    def get(self, name: str) -> str | None:
        """The first value of ``name``; for a list header, its first element."""
        values = self._values(name)
        if not values:
            return None
        if canonical_name(name).lower() in LIST_HEADERS:
            elements = self.get_all(name)
            return elements[0] if elements else values[0]
        return values[0]

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` in order; list headers are split on top-level commas."""
        values = self._values(name)
        if canonical_name(name).lower() not in LIST_HEADERS:
            return values
        return [element for value in values for element in split_list(value)]

    def count(self, name: str) -> int:
        """Header lines (not list elements) named ``name``."""
        return len(self._values(name))

    def set(self, name: str, value: str) -> None:
        """Replace every ``name`` line with one, where the first one stood (else at the end)."""
        key = canonical_name(name).lower()
        index = next((i for i, item in enumerate(self._items) if item[0] == key), len(self._items))
        self.remove(name)
        self._items.insert(index, (key, canonical_name(name), _normalize_value(value)))

    def remove(self, name: str) -> None:
        key = canonical_name(name).lower()
        self._items = [item for item in self._items if item[0] != key]

    def copy(self) -> Headers:
        return Headers(self)

    def _values(self, name: str) -> list[str]:
        key = canonical_name(name).lower()
        return [value for item_key, _, value in self._items if item_key == key]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self._values(name))

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter([(name, value) for _, name, value in self._items])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return [(k, v) for k, _, v in self._items] == [(k, v) for k, _, v in other._items]

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"


def split_list(value: str) -> list[str]:
    """Split a list header's value on commas outside quotes and <...> (section 7.3.1).

    Empty elements (``a,,b``) are dropped: the grammar has none, and keeping them would
    only hand callers empty strings to trip over.
    """
    parts: list[str] = []
    start = 0
    quoted = escaped = False
    angle = 0
    for index, char in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            escaped = char == "\\"
            quoted = char != '"'
        elif char == '"':
            quoted = True
        elif char == "<":
            angle += 1
        elif char == ">":
            angle = max(0, angle - 1)
        elif char == "," and angle == 0:
            parts.append(value[start:index])
            start = index + 1
    parts.append(value[start:])
    return [stripped for part in parts if (stripped := part.strip())]


# --- messages ------------------------------------------------------------------------


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
    """Content-Length is always written from the body (RFC 3261 section 20.14: on a stream
    it is the framing), replacing whatever the headers said."""
    lines = [start_line]
    lines += [f"{name}: {value}" for name, value in headers if name != "Content-Length"]
    lines.append(f"Content-Length: {len(body)}")
    # surrogateescape gives back any non-UTF-8 octets a parsed message carried.
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


# --- parsing -------------------------------------------------------------------------


def parse_message(data: bytes) -> Request | Response:
    """Parse one datagram (RFC 3261 section 18.3 framing for UDP).

    The body is exactly Content-Length octets; octets after it are not part of the
    message and are ignored (RFC 4475 dblreq). Without Content-Length the body is the
    rest of the datagram, which section 18.3 allows over UDP (RFC 4475 inv2543).
    """
    if len(data) > MAX_MESSAGE_SIZE:
        raise ParseError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_SIZE}")
    data = data.lstrip(b"\r\n")  # RFC 5626 section 3.5.1 keepalives and stray CRLFs
    if not data:
        raise ParseError("empty datagram")
    end = _HEAD_END.search(data)
    if end is None:
        # RFC 4475 baddn: no empty line; over UDP the message ends with the datagram.
        head, rest = data.rstrip(b"\r\n"), b""
    else:
        head, rest = data[:end.start()], data[end.end():]
    message, problem = _parse_head(head)
    try:
        length = _content_length(message.headers)
        if length is not None and length > len(rest):
            raise ParseError(f"Content-Length {length} is larger than the {len(rest)}-byte body")
    except ParseError as exc:
        if isinstance(message, Response):
            raise
        raise BadRequest(str(exc), 400, message) from None
    message.body = rest if length is None else rest[:length]
    if problem is not None:
        raise problem
    return message


class StreamParser:
    """Messages from a byte stream (TCP), framed by Content-Length.

    RFC 3261 section 18.3: on a stream Content-Length MUST be present, so a message
    without one, or with one that is not a count, is a framing error (``ParseError``):
    the stream cannot be resynchronised and the caller closes the connection. A request
    that is framed but invalid raises ``BadRequest`` after it has been consumed, so the
    caller can answer it and keep reading.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        # A head already parsed while its body is still arriving:
        # (message, deferred problem, offset of the body, body length).
        self._pending: tuple[Request | Response, BadRequest | None, int, int] | None = None

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next_message(self) -> Request | Response | None:
        """The next complete message, or None until more data arrives."""
        if self._pending is None:
            # RFC 5626 section 3.5.1: CRLF keepalives may come between messages.
            keepalive = len(self._buffer) - len(self._buffer.lstrip(b"\r\n"))
            del self._buffer[:keepalive]
            end = _HEAD_END.search(self._buffer, 0, MAX_MESSAGE_SIZE)
            if end is None:
                if len(self._buffer) >= MAX_MESSAGE_SIZE:
                    raise ParseError(f"no end of headers within {MAX_MESSAGE_SIZE} bytes")
                return None
            message, problem = _parse_head(bytes(self._buffer[:end.start()]))
            length = _content_length(message.headers)
            if length is None:
                raise ParseError("no Content-Length on a stream (RFC 3261 section 18.3)")
            if end.end() + length > MAX_MESSAGE_SIZE:
                raise ParseError(f"message of {end.end() + length} bytes exceeds {MAX_MESSAGE_SIZE}")
            self._pending = (message, problem, end.end(), length)
        message, problem, start, length = self._pending
        if len(self._buffer) < start + length:
            return None
        message.body = bytes(self._buffer[start:start + length])
        del self._buffer[:start + length]
        self._pending = None
        if problem is not None:
            raise problem
        return message


def _parse_head(head: bytes) -> tuple[Request | Response, BadRequest | None]:
    """Start line and headers. A broken response raises ParseError; a broken request is
    returned with the BadRequest it deserves, raised once its body has been framed."""
    # surrogateescape: any octet survives (RFC 4475 intmeth has a NUL in a quoted-pair).
    lines = _unfold(head.decode("utf-8", "surrogateescape").split("\n"))
    start, header_lines = lines[0], lines[1:]

    status_match = _STATUS_LINE.fullmatch(start)
    if status_match is not None:
        version, code, reason = status_match.groups()
        if version.upper() != SIP_VERSION:
            raise ParseError(f"unsupported version {version}")
        if len(code) != 3 or not 100 <= int(code) <= 699:
            raise ParseError(f"status code {code[:12]} is out of range")
        # The reason phrase is UTF-8 (RFC 4475 unreason); anything else is replaced.
        reason_text = (reason or "").encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        response = Response(int(code), reason_text, Headers())
        for line in header_lines:
            if not _add_header_line(response.headers, line):
                raise ParseError(f"malformed header line {line[:40]!r}")
        return response, None

    request_match = _REQUEST_LINE.fullmatch(start) or _LOOSE_REQUEST_LINE.fullmatch(start)
    if request_match is None:
        raise ParseError(f"not a SIP start line: {start[:60]!r}")
    method, uri, version = request_match.groups()
    request = Request(method, uri, Headers(), b"", version.upper())
    problem: BadRequest | None = None
    if request_match.re is _LOOSE_REQUEST_LINE:
        problem = BadRequest("malformed Request-Line (stray whitespace)", 400, request)
    for line in header_lines:
        if not _add_header_line(request.headers, line) and problem is None:
            problem = BadRequest(f"malformed header line {line[:40]!r}", 400, request)
    if request.version != SIP_VERSION:
        # RFC 3261 section 8.2.2.2 does not cover it, section 21.5.6 does: 505, whatever
        # else is wrong, since the rest was written to another grammar (RFC 4475 badvers).
        problem = BadRequest(f"SIP version {version} is not supported", 505, request)
    return request, problem


def _unfold(lines: list[str]) -> list[str]:
    """RFC 3261 section 7.3.1: a line starting with SP or HTAB continues the previous one."""
    out: list[str] = []
    for raw in lines:
        line = raw.removesuffix("\r")
        if line[:1] in (" ", "\t") and out:
            out[-1] = out[-1].rstrip(" \t") + " " + line.strip(" \t")
        elif line:
            out.append(line)
    return out or [""]


def _add_header_line(headers: Headers, line: str) -> bool:
    match = _HEADER_LINE.fullmatch(line)
    if match is None:
        return False
    headers.add(match.group(1), match.group(2))
    return True


def _content_length(headers: Headers) -> int | None:
    """RFC 3261 section 20.14 Content-Length = ( "Content-Length" / "l" ) HCOLON 1*DIGIT.

    A negative, non-numeric or conflicting value is a framing error (RFC 4475 ncl,
    mcl01): nothing after the headers can be trusted, so no count is ever guessed.
    """
    values = set(headers.get_all("Content-Length"))
    if not values:
        return None
    if len(values) > 1:
        raise ParseError(f"conflicting Content-Length values {sorted(values)}")
    (text,) = values
    if not text.isdigit() or not text.isascii():
        raise ParseError(f"invalid Content-Length {text[:20]!r}")
    return _bounded_int(text, MAX_MESSAGE_SIZE + 1)


def _bounded_int(digits: str, ceiling: int) -> int:
    """``int(digits)``, or ``ceiling`` if it is larger: a peer's 10,000-digit number must
    neither raise (Python caps int() at 4,300 digits) nor cost us time."""
    significant = digits.lstrip("0") or "0"
    if len(significant) > len(str(ceiling)):
        return ceiling
    return min(int(significant), ceiling)


# --- validation (RFC 3261 section 8.2) -----------------------------------------------


def validate_request(request: Request) -> None:
    """Raise BadRequest naming the first problem that makes ``request`` unanswerable.

    What an endpoint needs to run a transaction and a dialog is checked: the mandatory
    headers, one of each single-valued header, CSeq, Via, From, To, Contact and the form
    of the Request-URI. Whether we *serve* the request (its URI scheme, Require, the
    body's type) is the application's business, not the parser's.
    """
    headers = request.headers
    for name in MANDATORY_HEADERS:
        if not any(value for value in headers.get_all(name)):
            raise BadRequest(f"Missing {name} header")
    for name in SINGLE_HEADERS:
        if headers.count(name) > 1:
            raise BadRequest(f"More than one {name} header")
    # RFC 3261 section 25.1: the Request-URI is never in <> and has no LWS (RFC 4475 ltgtruri).
    if not _ABSOLUTE_URI.fullmatch(request.uri):
        raise BadRequest(f"malformed Request-URI {request.uri[:60]!r}")
    if request.uri.split(":", 1)[0].lower() in ("sip", "sips"):
        try:
            parse_uri(request.uri)
        except ParseError as exc:
            raise BadRequest(f"malformed Request-URI: {exc}") from None
    cseq = parse_cseq(headers.get("CSeq") or "")
    # RFC 3261 section 8.1.1.5: the CSeq method MUST match the request's (RFC 4475 mismatch01).
    if cseq.method != request.method:
        raise BadRequest(f"CSeq method {cseq.method} does not match {request.method}")
    for value in headers.get_all("Via"):
        parse_via(value)
    for name in ("From", "To"):
        parse_name_addr(headers.get(name) or "")
    for value in headers.get_all("Contact"):
        if value != "*":  # REGISTER's "remove all bindings" (RFC 3261 section 10.2.2)
            parse_name_addr(value)
    max_forwards = headers.get("Max-Forwards")
    if max_forwards is not None and not (max_forwards.isdigit() and max_forwards.isascii()):
        raise BadRequest(f"invalid Max-Forwards {max_forwards[:20]!r}")


def make_response(request: Request, status: int, reason: str | None = None, *,
                  to_tag: str | None = None, headers: Iterable[tuple[str, str]] = (),
                  body: bytes = b"") -> Response:
    """A response to ``request`` per RFC 3261 section 8.2.6.2.

    Via (every value, in order), From, To, Call-ID and CSeq are copied; ``to_tag`` is
    added to To unless the request's To already has a tag (an in-dialog request). The
    To value is copied as written with the tag appended, never re-serialized, so it
    compares equal to the request's. A header the request lacks is left out, so a 400
    for a missing Call-ID can still go out. Also copied where the RFC says so: Timestamp
    into a 100 (section 8.2.6.1) and Record-Route into a dialog-creating response to
    INVITE (section 12.1.1).
    """
    out = Headers()
    for value in request.headers.get_all("Via"):
        out.add("Via", value)
    for name in ("From", "To", "Call-ID", "CSeq"):
        found = request.headers.get(name)
        if found is None:
            continue
        if name == "To" and to_tag is not None and parse_name_addr(found).tag is None:
            found = f"{found};tag={to_tag}"
        out.add(name, found)
    if status == 100 and "Timestamp" in request.headers:
        out.add("Timestamp", request.headers.get("Timestamp") or "")
    if request.method == "INVITE" and 100 < status < 300:
        for value in request.headers.get_all("Record-Route"):
            out.add("Record-Route", value)
    for name, value in headers:
        out.add(name, value)
    if reason is None:
        reason = REASON_PHRASES.get(status) or STATUS_CLASSES.get(status // 100, "Unknown")
    return Response(status, reason, out, body)


# --- header values -------------------------------------------------------------------


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    start = 0
    quoted = escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif quoted:
            escaped = char == "\\"
            quoted = char != '"'
        elif char == '"':
            quoted = True
        elif char == separator:
            parts.append(text[start:index])
            start = index + 1
    parts.append(text[start:])
    return parts


def _parse_params(text: str) -> dict[str, str | None]:
    """``;name=value;flag`` header parameters (RFC 3261 section 25.1 generic-param).

    ``text`` is what follows the first SEMI. Names are case-insensitive, so they are
    lower-cased; values are kept as written (a quoted-string keeps its quotes). An empty
    parameter (``;;``) is an error: RFC 4475 badinv01.
    """
    params: dict[str, str | None] = {}
    for part in _split_outside_quotes(text, ";"):
        name, eq, value = part.partition("=")
        name, value = name.strip(), value.strip()
        if not name:
            raise BadRequest("empty parameter (;;)")
        if not re.fullmatch(TOKEN, name):
            raise BadRequest(f"invalid parameter {part.strip()[:30]!r}")
        if eq and not _GEN_VALUE.fullmatch(value):
            raise BadRequest(f"invalid value for parameter {name[:30]}")
        params[name.lower()] = value if eq else None
    return params


def _format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


def _host_literal(host: str) -> str:
    """IPv6 addresses are written in brackets (RFC 3261 section 25.1 IPv6reference)."""
    return f"[{host}]" if ":" in host else host


# Via = ( "Via" / "v" ) HCOLON via-parm *(COMMA via-parm)      (RFC 3261 section 20.42)
#   via-parm = sent-protocol LWS sent-by *( SEMI via-params )
#   sent-protocol = protocol-name SLASH protocol-version SLASH transport
#   transport = "UDP" / "TCP" / "TLS" / "SCTP" / other-transport   ; other-transport = token
#   sent-by = host [ COLON port ] ; host = hostname / IPv4address / IPv6reference
#   SLASH = SWS "/" SWS ; COLON = SWS ":" SWS ; SEMI = SWS ";" SWS
_VIA = re.compile(
    rf"""SIP\s*/\s*2\.0\s*/\s*({TOKEN})\s+
         (\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?:\s*:\s*(\d+))?
         \s*(?:;(.*))?""",
    re.IGNORECASE | re.VERBOSE | re.DOTALL,
)


@dataclass(frozen=True)
class Via:
    """One Via value. ``host`` is without brackets; ``transport`` is upper-case."""

    transport: str
    host: str
    port: int | None
    params: dict[str, str | None] = field(default_factory=dict, hash=False)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"SIP/2.0/{self.transport} {_host_literal(self.host)}{port}{_format_params(self.params)}"


def parse_via(value: str) -> Via:
    """One element of a Via header (split the header with ``Headers.get_all`` first)."""
    match = _VIA.fullmatch(value.strip())
    if match is None:
        raise BadRequest(f"malformed Via {value[:60]!r}")
    transport, host, port, params = match.groups()
    port_number = _bounded_int(port, MAX_PORT + 1) if port else None
    if port_number is not None and port_number > MAX_PORT:
        raise BadRequest(f"Via port {port[:12]} is out of range")
    return Via(transport.upper(), host.strip("[]"), port_number,
               _parse_params(params) if params is not None else {})


@dataclass(frozen=True)
class CSeq:
    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


# CSeq = "CSeq" HCOLON 1*DIGIT LWS Method      (RFC 3261 section 20.16)
_CSEQ = re.compile(rf"(\d+)\s+({TOKEN})")


def parse_cseq(value: str) -> CSeq:
    match = _CSEQ.fullmatch(value.strip())
    if match is None:
        raise BadRequest(f"malformed CSeq {value[:40]!r}")
    number = _bounded_int(match.group(1), MAX_CSEQ + 1)
    if number > MAX_CSEQ:
        # RFC 3261 section 8.1.1.5; RFC 4475 scalar02
        raise BadRequest(f"CSeq number {match.group(1)[:20]} is larger than 2**32-1")
    return CSeq(number, match.group(2))


@dataclass(frozen=True)
class NameAddr:
    """A From, To, Contact, Route or Record-Route value.

    ``display`` is the display name as text (quotes and escapes removed), ``uri`` the
    URI as written (any scheme), ``params`` the header parameters. Serialized always in
    the ``name-addr`` form, so URI parameters can never be mistaken for header ones.
    """

    display: str | None
    uri: str
    params: dict[str, str | None] = field(default_factory=dict, hash=False)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def with_tag(self, tag: str) -> NameAddr:
        return NameAddr(self.display, self.uri, {**self.params, "tag": tag})

    def __str__(self) -> str:
        display = f"{_quote(self.display)} " if self.display else ""
        return f"{display}<{self.uri}>{_format_params(self.params)}"


def _quote(text: str) -> str:
    """A quoted-string for ``text``: quoted-pair for what qdtext cannot hold (section 25.1)."""
    escaped = "".join(f"\\{c}" if c in '"\\' or (ord(c) < 0x20 and c != "\t") or c == "\x7f" else c
                      for c in text)
    return f'"{escaped}"'


def _unquote(quoted: str) -> str:
    return re.sub(r"\\(.)", r"\1", quoted[1:-1], flags=re.DOTALL)


def parse_name_addr(value: str) -> NameAddr:
    """Parse ``( name-addr / addr-spec ) *( SEMI generic-param )`` (RFC 3261 section 20.10).

        name-addr    = [ display-name ] LAQUOT addr-spec RAQUOT
        display-name = *(token LWS) / quoted-string

    With <>, parameters after > belong to the header. Without <>, everything after the
    first ; is a header parameter, never a URI one. Liberal where RFC 4475 says an
    element may be: no LWS before < (lwsdisp), an unquoted display name with non-token
    characters (baddn), LWS inside <> (badaspec). An unterminated quote is an error (quotbal).
    """
    text = value.strip()
    display: str | None = None
    if text.startswith('"'):
        quoted = re.match(QUOTED_STRING, text)
        if quoted is None:
            raise BadRequest(f"unterminated quoted string in {value[:60]!r}")
        display = _unquote(quoted.group())
        text = text[quoted.end():].lstrip()
        if not text.startswith("<"):
            raise BadRequest(f"display name without <uri> in {value[:60]!r}")
    if "<" in text:
        before, _, rest = text.partition("<")
        if display is None and before.strip():
            if '"' in before:
                raise BadRequest(f"malformed display name in {value[:60]!r}")
            display = " ".join(before.split())
        uri, closed, after = rest.partition(">")
        if not closed:
            raise BadRequest(f"unclosed < in {value[:60]!r}")
        uri, after = uri.strip(), after.strip()
        if after and not after.startswith(";"):
            raise BadRequest(f"junk after > in {value[:60]!r}")
        params = _parse_params(after[1:]) if after else {}
    else:
        uri, semi, after = text.partition(";")
        uri = uri.strip()
        params = _parse_params(after) if semi else {}
    if not _ABSOLUTE_URI.fullmatch(uri):
        raise BadRequest(f"malformed URI in {value[:60]!r}")
    return NameAddr(display, uri, params)


# SIP-URI = "sip:" [ userinfo ] hostport uri-parameters [ headers ]      (RFC 3261 section 19.1.1)
#   userinfo = ( user / telephone-subscriber ) [ ":" password ] "@"
#   user = 1*( unreserved / escaped / user-unreserved )
#   user-unreserved = "&" / "=" / "+" / "$" / "," / ";" / "?" / "/"
#   password = *( unreserved / escaped / "&" / "=" / "+" / "$" / "," )
#   unreserved = alphanum / mark ; mark = "-" / "_" / "." / "!" / "~" / "*" / "'" / "(" / ")"
#   escaped = "%" HEXDIG HEXDIG   (kept escaped: RFC 4475 esc01 and escnull say never unescape twice)
_USER = re.compile(r"[A-Za-z0-9\-_.!~*'()%&=+$,;?/]+")
_PASSWORD = re.compile(r"[A-Za-z0-9\-_.!~*'()%&=+$,]*")
#   hostport = host [ ":" port ] ; host = hostname / IPv4address / IPv6reference
_HOSTPORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-.]+)(?::(\d+))?")
#   uri-parameter = transport-param / ... / other-param ; other-param = pname [ "=" pvalue ]
#   pname = 1*paramchar ; pvalue = 1*paramchar
#   paramchar = param-unreserved / unreserved / escaped
#   param-unreserved = "[" / "]" / "/" / ":" / "&" / "+" / "$"
_URI_PARAM = re.compile(r"([A-Za-z0-9\-_.!~*'()%\[\]/:&+$]+)(?:=([A-Za-z0-9\-_.!~*'()%\[\]/:&+$]+))?")
#   headers = "?" header *( "&" header ) ; header = hname "=" hvalue
#   hname/hvalue = 1*/*( hnv-unreserved / unreserved / escaped )
#   hnv-unreserved = "[" / "]" / "/" / "?" / ":" / "+" / "$"
_URI_HEADER = re.compile(r"([A-Za-z0-9\-_.!~*'()%\[\]/?:+$]+)=([A-Za-z0-9\-_.!~*'()%\[\]/?:+$]*)")


@dataclass(frozen=True)
class SipUri:
    """A sip: or sips: URI (RFC 3261 section 19.1). Escapes are kept as written."""

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
        port = f":{self.port}" if self.port is not None else ""
        query = "&".join(f"{k}={v}" for k, v in self.headers.items())
        return (f"{self.scheme}:{userinfo}{_host_literal(self.host)}{port}"
                f"{_format_params(self.params)}{'?' + query if query else ''}")


def parse_uri(value: str) -> SipUri:
    """Parse a sip: or sips: URI. Any other scheme, or a malformed URI, is a ParseError,
    so the caller decides: 416 for a scheme (RFC 3261 section 8.2.2.1), 400 otherwise."""
    scheme, colon, rest = value.strip().partition(":")
    if not colon or scheme.lower() not in ("sip", "sips"):
        raise ParseError(f"not a sip or sips URI: {value[:60]!r}")
    # "@" appears in neither user, password, host, parameters nor headers, so the first
    # one ends the userinfo, even when the user part holds ";" or "?" (RFC 4475 semiuri).
    userinfo, at, rest = rest.partition("@")
    if not at:
        userinfo, rest = "", userinfo
    user = password = None
    if at:
        user, has_password, password_text = userinfo.partition(":")
        password = password_text if has_password else None
        if not _USER.fullmatch(user) or (password is not None and not _PASSWORD.fullmatch(password)):
            raise ParseError(f"malformed userinfo in URI {value[:60]!r}")
    rest, question, query = rest.partition("?")
    hostport, _, param_text = rest.partition(";")
    match = _HOSTPORT.fullmatch(hostport)
    if match is None:
        raise ParseError(f"malformed host in URI {value[:60]!r}")
    port = _bounded_int(match.group(2), MAX_PORT + 1) if match.group(2) else None
    if port is not None and port > MAX_PORT:
        raise ParseError(f"port out of range in URI {value[:60]!r}")
    params: dict[str, str | None] = {}
    for part in param_text.split(";") if param_text else []:
        param = _URI_PARAM.fullmatch(part)
        if param is None:
            raise ParseError(f"malformed parameter {part[:30]!r} in URI")
        params[param.group(1).lower()] = param.group(2)
    headers: dict[str, str] = {}
    for part in query.split("&") if question else []:
        header = _URI_HEADER.fullmatch(part)
        if header is None:
            raise ParseError(f"malformed header {part[:30]!r} in URI")
        headers[header.group(1)] = header.group(2)
    return SipUri(scheme.lower(), user, password, match.group(1).strip("[]"), port, params, headers)


# --- identifiers ---------------------------------------------------------------------


def new_tag() -> str:
    """A From/To tag: RFC 3261 section 19.3 asks for at least 32 random bits."""
    return secrets.token_hex(TAG_BYTES)


def new_branch() -> str:
    """A branch unique in space and time, with the RFC 3261 magic cookie (section 8.1.1.7)."""
    return BRANCH_COOKIE + secrets.token_hex(BRANCH_BYTES)


def new_call_id(host: str) -> str:
    """RFC 3261 section 8.1.1.4: cryptographically random, ``@host`` to help debugging."""
    return f"{secrets.token_hex(CALL_ID_BYTES)}@{host}"
