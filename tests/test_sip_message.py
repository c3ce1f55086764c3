"""SIP message parsing and serialization with plain data (RFC 3261 sections 7, 8.2, 18.3, 19, 20)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipgw.sip.message import (
    BRANCH_COOKIE,
    MAX_MESSAGE_SIZE,
    BadRequest,
    Headers,
    NameAddr,
    ParseError,
    Request,
    Response,
    SipError,
    SipUri,
    StreamParser,
    Via,
    canonical_name,
    make_response,
    new_branch,
    new_call_id,
    new_tag,
    parse_cseq,
    parse_message,
    parse_name_addr,
    parse_uri,
    parse_via,
    split_list,
    validate_request,
)

INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"v: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds, SIP/2.0/TCP proxy.example.com;branch=z9hG4bKx\r\n"
    b"Via: SIP/2.0/UDP [2001:db8::1]:5070;branch=z9hG4bK3\r\n"
    b"MaX-fOrWaRdS: 70\r\n"
    b"t: Bob <sip:bob@example.com>\r\n"
    b'f: "Alice \\"A\\"" <sip:alice@example.com;transport=udp>;tag=1928301774\r\n'
    b"i: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"m: <sip:alice@pc33.example.com>\r\n"
    b"Record-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\n"
    b"Subject: a folded\r\n"
    b"   subject \t line\r\n"
    b'X-Unknown: kept   as "is  ,  quoted"\r\n'
    b"c: application/sdp\r\n"
    b"l: 4\r\n"
    b"\r\n"
    b"v=0\r\ntrailing octets ignored"
)


def options(*extra: bytes, version: bytes = b"SIP/2.0") -> bytes:
    return b"\r\n".join([
        b"OPTIONS sip:b@example.com " + version,
        b"Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1",
        b"From: <sip:a@example.com>;tag=1",
        b"To: <sip:b@example.com>",
        b"Call-ID: c1",
        b"CSeq: 1 OPTIONS",
        *extra,
    ])


# --- parsing and framing ---------------------------------------------------------------


def test_compact_forms_canonical_names_folding_and_lws():
    message = parse_message(INVITE)
    assert isinstance(message, Request)
    assert (message.method, message.uri, message.version) == ("INVITE", "sip:bob@example.com", "SIP/2.0")
    names = [name for name, _ in message.headers]
    assert names[:6] == ["Via", "Via", "Max-Forwards", "To", "From", "Call-ID"]
    assert message.headers.get("call-id") == message.headers.get("i") == "a84b4c76e66710@pc33.example.com"
    assert message.headers.get("Subject") == "a folded subject line"  # RFC 3261 section 7.3.1
    assert message.headers.get("x-unknown") == 'kept as "is  ,  quoted"'  # quoted strings keep their LWS
    assert message.body == b"v=0\r"
    validate_request(message)


def test_via_lines_and_comma_lists_concatenate_in_order():
    message = parse_message(INVITE)
    vias = message.headers.get_all("Via")
    assert [parse_via(v).host for v in vias] == ["192.0.2.1", "proxy.example.com", "2001:db8::1"]
    assert message.headers.get("Via") == vias[0]  # the top Via, not the whole first line
    assert message.headers.count("Via") == 2
    assert message.headers.get_all("Record-Route") == ["<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]
    assert message.headers.get_all("Subject") == ["a folded subject line"]  # not a list header


def test_serialization_uses_long_names_crlf_and_fixes_content_length():
    message = parse_message(INVITE)
    data = message.to_bytes()
    assert data.startswith(b"INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;")
    assert b"\r\nCall-ID: a84b4c76e66710@pc33.example.com\r\n" in data
    assert data.endswith(b"\r\nContent-Length: 4\r\n\r\nv=0\r")
    assert data.count(b"Content-Length") == 1 and b"\nl:" not in data
    again = parse_message(data)
    assert again == message


def test_bare_lf_line_ends_and_leading_keepalives():
    message = parse_message(b"\r\n\r\n" + options(b"Content-Length: 2").replace(b"\r\n", b"\n") + b"\n\nhi")
    assert isinstance(message, Request) and message.body == b"hi"
    assert message.headers.get("Call-ID") == "c1"


def test_no_content_length_takes_the_rest_of_the_datagram():
    # RFC 3261 section 18.3: Content-Length is optional over UDP (RFC 4475 inv2543).
    assert parse_message(options() + b"\r\n\r\nbody bytes").body == b"body bytes"


def test_trailing_octets_after_content_length_are_ignored():
    message = parse_message(options(b"Content-Length: 0") + b"\r\n\r\nINVITE sip:x SIP/2.0\r\n\r\n")
    assert message.body == b""  # RFC 4475 dblreq


def test_duplicate_equal_content_length_frames_but_does_not_validate():
    message = parse_message(options(b"Content-Length: 2", b"l: 2") + b"\r\n\r\nhi!")
    assert message.body == b"hi"
    with pytest.raises(BadRequest, match="More than one Content-Length"):
        validate_request(message)  # RFC 3261 section 7.3.1: single-valued


@pytest.mark.parametrize(
    ("extra", "body", "needle"),
    [
        (b"Content-Length: 9999", b"short", "larger"),  # RFC 4475 clerr
        (b"Content-Length: -999", b"", "invalid Content-Length"),  # RFC 4475 ncl
        (b"Content-Length: ten", b"", "invalid Content-Length"),
        (b"Content-Length: 0\r\nl: 3", b"abc", "conflicting"),  # RFC 4475 mcl01
        (b"Content-Length: " + b"9" * 5000, b"", "larger"),  # no int() blow-up
    ],
)
def test_bad_content_length_in_a_request_is_a_400(extra, body, needle):
    with pytest.raises(BadRequest) as info:
        parse_message(options(extra) + b"\r\n\r\n" + body)
    assert info.value.status == 400 and needle in info.value.reason
    assert info.value.request is not None and info.value.request.headers.get("Call-ID") == "c1"


def test_bad_content_length_in_a_response_is_dropped():
    with pytest.raises(ParseError):
        parse_message(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 10\r\n\r\nshort")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\r\n\r\n",  # a keepalive and nothing else
        b"hello world\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"SIP/2.0 4294967301 Huge\r\nContent-Length: 0\r\n\r\n",  # RFC 4475 bigcode
        b"SIP/2.0 99 Low\r\n\r\n",
        b"SIP/2.0 700 High\r\n\r\n",
        b"SIP/3.0 200 OK\r\n\r\n",
        b"SIP/2.0 200 OK\r\nno colon here\r\n\r\n",
        b"OPTIONS sip:x SIP/2.0\r\n" + b"X: " + b"y" * MAX_MESSAGE_SIZE + b"\r\n\r\n",
    ],
)
def test_garbage_is_a_parse_error(data):
    with pytest.raises(ParseError):
        parse_message(data)


def test_unknown_version_is_505_with_the_request_attached():
    with pytest.raises(BadRequest) as info:
        parse_message(options(b"Content-Length: 0", version=b"SIP/7.0") + b"\r\n\r\n")
    assert info.value.status == 505 and info.value.request.version == "SIP/7.0"


@pytest.mark.parametrize(
    "start",
    [b"INVITE  sip:b@example.com  SIP/2.0", b"OPTIONS sip:b@example.com SIP/2.0  ", b"INVITE sip:b@x; lr SIP/2.0"],
)
def test_stray_whitespace_in_the_request_line_is_a_400(start):
    data = options(b"Content-Length: 0") + b"\r\n\r\n"
    with pytest.raises(BadRequest) as info:
        parse_message(start + data[data.index(b"\r\n"):])
    assert info.value.status == 400 and info.value.request.headers.get("CSeq") == "1 OPTIONS"


def test_malformed_header_line_in_a_request_is_a_400_after_framing():
    with pytest.raises(BadRequest, match="malformed header line") as info:
        parse_message(options(b"this is not a header", b"Content-Length: 2") + b"\r\n\r\nhi")
    assert info.value.request.body == b"hi"


def test_response_parsing_reason_phrases():
    response = parse_message(b"SIP/2.0 180 \r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(response, Response) and (response.status, response.reason) == (180, "")
    utf8 = parse_message("SIP/2.0 200 Très bien\r\n\r\n".encode())
    assert utf8.reason == "Très bien"
    latin1 = parse_message(b"SIP/2.0 200 Tr\xe8s\r\n\r\n")
    assert latin1.reason == "Tr\ufffds"


def test_non_utf8_header_octets_survive_a_round_trip():
    data = options(b"X-Raw: caf\xe9 \x00", b"Content-Length: 0") + b"\r\n\r\n"
    message = parse_message(data)
    assert parse_message(message.to_bytes()) == message
    assert b"X-Raw: caf\xe9 \x00\r\n" in message.to_bytes()


# --- the stream parser -----------------------------------------------------------------


def test_stream_parser_frames_by_content_length_across_chunks():
    first = options(b"Content-Length: 5") + b"\r\n\r\nhello"
    second = b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"
    parser = StreamParser()
    got = []
    for byte in b"\r\n\r\n" + first + b"\r\n\r\n" + second:  # keepalives around and between
        parser.feed(bytes([byte]))
        message = parser.next_message()
        if message is not None:
            got.append(message)
    assert [type(m) for m in got] == [Request, Response]
    assert got[0].body == b"hello" and got[1].status == 200
    assert parser.next_message() is None


def test_stream_parser_needs_content_length():
    parser = StreamParser()
    parser.feed(options() + b"\r\n\r\n")
    with pytest.raises(ParseError, match="Content-Length"):
        parser.next_message()


def test_stream_parser_consumes_a_bad_request_and_keeps_going():
    parser = StreamParser()
    parser.feed(options(b"Content-Length: 2", version=b"SIP/3.0") + b"\r\n\r\nhi")
    parser.feed(options(b"Content-Length: 0") + b"\r\n\r\n")
    with pytest.raises(BadRequest) as info:
        parser.next_message()
    assert info.value.status == 505 and info.value.request.body == b"hi"
    assert isinstance(parser.next_message(), Request)


@pytest.mark.parametrize("data", [b"OPTIONS sip:x SIP/2.0\r\nX: " + b"y" * MAX_MESSAGE_SIZE,
                                  options(b"Content-Length: 70000") + b"\r\n\r\n",
                                  options(b"Content-Length: -1") + b"\r\n\r\n"])
def test_stream_parser_framing_errors(data):
    parser = StreamParser()
    parser.feed(data)
    with pytest.raises(ParseError):
        parser.next_message()


def test_stream_parser_waits_for_the_body():
    parser = StreamParser()
    parser.feed(options(b"Content-Length: 4") + b"\r\n\r\nab")
    assert parser.next_message() is None
    parser.feed(b"cd")
    assert parser.next_message().body == b"abcd"


# --- headers -----------------------------------------------------------------------------


def test_headers_multimap_operations():
    headers = Headers([("v", "SIP/2.0/UDP a;branch=z9hG4bK1"), ("To", "<sip:b@y>"), ("Via", "SIP/2.0/UDP b")])
    assert "VIA" in headers and "v" in headers and "Route" not in headers
    headers.set("via", "SIP/2.0/UDP c")
    assert list(headers) == [("Via", "SIP/2.0/UDP c"), ("To", "<sip:b@y>")]  # where the first one stood
    headers.set("X-New", "1")
    assert list(headers)[-1] == ("X-New", "1")
    clone = headers.copy()
    clone.add("To", "<sip:c@z>")
    assert headers.count("To") == 1 and clone.count("To") == 2 and clone != headers
    headers.remove("to")
    assert headers.get("To") is None and headers.get_all("To") == []
    assert Headers([("call-id", "x")]) == Headers([("i", "x")])


@pytest.mark.parametrize(("name", "value"), [("Bad Name", "v"), ("X", "a\r\nInjected: 1"), ("", "v"), ("X:", "v")])
def test_headers_refuse_what_would_inject(name, value):
    with pytest.raises(ValueError):
        Headers([(name, value)])


def test_list_splitting_respects_quotes_and_brackets():
    headers = Headers([("Contact", '"a, \\"b" <sip:a@x;p=1,2>, <sip:b@y>,,'), ("m", "<sip:c@z>")])
    assert headers.get_all("contact") == ['"a, \\"b" <sip:a@x;p=1,2>', "<sip:b@y>", "<sip:c@z>"]
    assert headers.get("Contact") == '"a, \\"b" <sip:a@x;p=1,2>'
    assert split_list(" INVITE ,ACK,  BYE ") == ["INVITE", "ACK", "BYE"]


def test_canonical_names():
    assert [canonical_name(n) for n in ("i", "L", "cseq", "www-authenticate", "X-Mine")] == [
        "Call-ID", "Content-Length", "CSeq", "WWW-Authenticate", "X-Mine"]


# --- validation (RFC 3261 section 8.2) ---------------------------------------------------


def request_with(**replace: str) -> Request:
    base = {
        "Via": "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1", "From": "<sip:a@x>;tag=1", "To": "<sip:b@y>",
        "Call-ID": "c1", "CSeq": "1 OPTIONS", "Max-Forwards": "70",
    }
    base.update({key.replace("_", "-"): value for key, value in replace.items()})
    return Request("OPTIONS", "sip:b@y", Headers((k, v) for k, v in base.items() if v))


def test_a_minimal_request_validates_without_max_forwards():
    validate_request(request_with(Max_Forwards=""))  # RFC 2543 compatibility


@pytest.mark.parametrize(
    ("replace", "needle"),
    [
        ({"Call_ID": ""}, "Missing Call-ID"),
        ({"From": ""}, "Missing From"),
        ({"To": ""}, "Missing To"),
        ({"Via": ""}, "Missing Via"),
        ({"CSeq": ""}, "Missing CSeq"),
        ({"CSeq": "1 INVITE"}, "CSeq method"),
        ({"CSeq": "4294967296 OPTIONS"}, "2**32"),
        ({"CSeq": "one OPTIONS"}, "CSeq"),
        ({"Via": "SIP/2.0/UDP"}, "Via"),
        ({"Via": "SIP/2.0/UDP 192.0.2.1;;branch=z9hG4bK1"}, "empty parameter"),
        ({"Via": "SIP/2.0/UDP 192.0.2.1:99999"}, "port"),
        ({"To": '"unterminated <sip:b@y>'}, "quoted"),
        ({"From": "<sip:a@x"}, "unclosed"),
        ({"Contact": "<sip:c@z>;;"}, "empty parameter"),
        ({"Max_Forwards": "many"}, "Max-Forwards"),
    ],
)
def test_validate_request_names_the_problem(replace, needle):
    with pytest.raises(BadRequest) as info:
        validate_request(request_with(**replace))
    assert needle in info.value.reason and info.value.status == 400


@pytest.mark.parametrize("name", ["Call-ID", "To", "From", "CSeq", "Max-Forwards"])
def test_repeated_single_headers_are_rejected(name):
    request = request_with()
    request.headers.add(name, request.headers.get(name) or "")
    with pytest.raises(BadRequest, match=f"More than one {name}"):
        validate_request(request)


@pytest.mark.parametrize(("uri", "ok"), [("<sip:b@y>", False), ("sip:b@y;;x", False), ("sip:", False),
                                         ("sip:b@[2001:db8::1]:5060;transport=udp", True),
                                         ("tel:+15551234", True), ("urn:service:sos", True)])
def test_request_uri_form(uri, ok):
    request = request_with()
    request.uri = uri
    if ok:
        validate_request(request)  # a scheme we do not serve is the application's 416
    else:
        with pytest.raises(BadRequest, match="Request-URI"):
            validate_request(request)


def test_register_contact_star_is_valid():
    request = request_with(Contact="*", CSeq="1 REGISTER")
    request.method = "REGISTER"
    validate_request(request)


# --- make_response (RFC 3261 section 8.2.6) ----------------------------------------------


def test_make_response_copies_the_transaction_headers():
    request = parse_message(INVITE)
    response = make_response(request, 486, to_tag="xyz", headers=[("Retry-After", "60")], body=b"x")
    assert (response.status, response.reason, response.body) == (486, "Busy Here", b"x")
    assert response.headers.get_all("Via") == request.headers.get_all("Via")
    assert response.headers.get("To") == "Bob <sip:bob@example.com>;tag=xyz"  # as written, tag appended
    for name in ("From", "Call-ID", "CSeq"):
        assert response.headers.get(name) == request.headers.get(name)
    assert response.headers.get("Retry-After") == "60"
    assert "Record-Route" not in response.headers and "Subject" not in response.headers


def test_make_response_keeps_an_existing_to_tag():
    request = request_with(To="<sip:b@y>;tag=abc")
    assert parse_name_addr(make_response(request, 200, to_tag="new").headers.get("To")).tag == "abc"


def test_make_response_copies_record_route_into_dialog_creating_responses():
    request = parse_message(INVITE)
    assert make_response(request, 200, to_tag="t").headers.get_all("Record-Route") == [
        "<sip:p1.example.com;lr>", "<sip:p2.example.com;lr>"]  # RFC 3261 section 12.1.1
    assert "Record-Route" not in make_response(request, 100).headers


def test_make_response_copies_timestamp_into_100():
    request = request_with(Timestamp="54.3")
    assert make_response(request, 100).headers.get("Timestamp") == "54.3"  # RFC 3261 section 8.2.6.1
    assert "Timestamp" not in make_response(request, 200).headers


def test_make_response_reason_phrases_and_missing_headers():
    request = request_with(Call_ID="")
    response = make_response(request, 400, "Missing Call-ID header")
    assert response.reason == "Missing Call-ID header" and "Call-ID" not in response.headers
    assert make_response(request, 505).reason == "Version Not Supported"
    assert make_response(request, 499).reason == "Request Failure"
    assert make_response(request, 200, to_tag="t").to_bytes().startswith(b"SIP/2.0 200 OK\r\n")


# --- header values -----------------------------------------------------------------------


def test_via_parsing_and_serialization():
    via = parse_via("SIP/2.0/udp [2001:db8::9]:5070 ;branch=z9hG4bKabc;rport;received=2001:db8::1")
    assert (via.transport, via.host, via.port, via.branch) == ("UDP", "2001:db8::9", 5070, "z9hG4bKabc")
    assert via.params["rport"] is None and via.params["received"] == "2001:db8::1"
    assert str(via) == "SIP/2.0/UDP [2001:db8::9]:5070;branch=z9hG4bKabc;rport;received=2001:db8::1"
    folded = parse_via("SIP / 2.0 / TCP spindle.example.com ; branch = z9hG4bK9ikj8")  # RFC 4475 wsinv
    assert (folded.transport, folded.host, folded.port, folded.branch) == ("TCP", "spindle.example.com", None,
                                                                           "z9hG4bK9ikj8")
    assert str(Via("UDP", "192.0.2.1", None, {"branch": "z9hG4bKx"})) == "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx"


@pytest.mark.parametrize("value", ["", "SIP/2.0/UDP", "SIP/1.0/UDP host", "SIP/2.0/UDP host;;branch=x",
                                   "SIP/2.0/UDP host:70000", "SIP/2.0/UDP ho st", "SIP/2.0/UDP host;=x",
                                   "SIP/2.0/UDP host;branch=a b"])
def test_bad_via_values(value):
    with pytest.raises(BadRequest):
        parse_via(value)


def test_name_addr_parsing():
    value = parse_name_addr('"Alice \\"A\\"" <sip:alice@example.com;transport=udp>;tag=1928;X=1')
    assert value.display == 'Alice "A"' and value.uri == "sip:alice@example.com;transport=udp"
    assert value.tag == "1928" and value.params == {"tag": "1928", "x": "1"}
    assert str(value) == '"Alice \\"A\\"" <sip:alice@example.com;transport=udp>;tag=1928;x=1'
    assert parse_name_addr(str(value)) == value
    bare = parse_name_addr("sip:bob@example.com ; tag = 5")  # no <>: params are header params
    assert (bare.display, bare.uri, bare.tag) == (None, "sip:bob@example.com", "5")
    assert str(bare.with_tag("6")) == "<sip:bob@example.com>;tag=6"
    assert parse_name_addr("Bob<sip:b@y>").display == "Bob"  # RFC 4475 lwsdisp
    assert parse_name_addr("Bob   Smith <sip:b@y>").display == "Bob Smith"
    assert parse_name_addr("<urn:service:sos>").uri == "urn:service:sos"


def test_display_names_with_control_characters_are_quoted_back():
    value = NameAddr('a\\b\x00"', "sip:x@y")
    assert str(value) == '"a\\\\b\\\x00\\"" <sip:x@y>'
    assert parse_name_addr(str(value)).display == 'a\\b\x00"'


@pytest.mark.parametrize("value", ['"open <sip:a@b>', "<sip:a@b", "<sip:a@b> junk", "<sip:a@b>;;", "no uri",
                                   '"name" sip:a@b', "sip:a b@c", "<>", ""])
def test_bad_name_addr_values(value):
    with pytest.raises(BadRequest):
        parse_name_addr(value)


def test_cseq():
    assert parse_cseq("  0010  INVITE ").number == 10
    assert str(parse_cseq("4294967295 ACK")) == "4294967295 ACK"
    for bad in ("4294967296 ACK", "1", "INVITE", "-1 INVITE", "1 IN VITE", "9" * 5000 + " ACK"):
        with pytest.raises(BadRequest):
            parse_cseq(bad)


def test_sip_uri_parsing_and_serialization():
    uri = parse_uri("sips:user;par=u%40example.net:pw@[2001:db8::1]:5061;transport=tcp;lr?Subject=hi&X=%20")
    assert (uri.scheme, uri.user, uri.password) == ("sips", "user;par=u%40example.net", "pw")
    assert (uri.host, uri.port) == ("2001:db8::1", 5061)
    assert uri.params == {"transport": "tcp", "lr": None} and uri.headers == {"Subject": "hi", "X": "%20"}
    assert str(uri) == "sips:user;par=u%40example.net:pw@[2001:db8::1]:5061;transport=tcp;lr?Subject=hi&X=%20"
    plain = parse_uri("SIP:example.com")
    assert plain == SipUri("sip", None, None, "example.com", None)
    assert str(plain) == "sip:example.com"


@pytest.mark.parametrize("value", ["tel:+1555", "http://example.com", "mailto:a@b", "nocolon"])
def test_other_schemes_are_parse_errors_for_a_416(value):
    with pytest.raises(ParseError, match="not a sip or sips URI"):
        parse_uri(value)


@pytest.mark.parametrize("value", ["sip:", "sip:@host", "sip:a@", "sip:a@ho st", "sip:a@host:99999",
                                   "sip:a@host;;lr", "sip:a@host?novalue", "sip:a b@host", "sip:a@[zz]"])
def test_malformed_sip_uris(value):
    with pytest.raises(ParseError):
        parse_uri(value)


def test_identifiers_are_random_and_well_formed():
    assert new_branch().startswith(BRANCH_COOKIE) and new_branch() != new_branch()
    tag = new_tag()
    assert len(tag) >= 8 and tag != new_tag()
    assert new_call_id("192.0.2.1").endswith("@192.0.2.1")
    assert parse_via(f"SIP/2.0/UDP h;branch={new_branch()}").branch.startswith(BRANCH_COOKIE)


# --- properties --------------------------------------------------------------------------

TOKEN_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
TOKENS = st.text(alphabet=TOKEN_CHARS, min_size=1, max_size=12)
HEADER_NAMES = TOKENS.filter(lambda name: canonical_name(name) != "Content-Length")
WORDS = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=15)
# Header values as they look after LWS is collapsed: words joined by one space.
VALUES = st.lists(WORDS, max_size=4).map(" ".join)
HEADER_LISTS = st.lists(st.tuples(HEADER_NAMES, VALUES), max_size=8)


@given(method=TOKENS, uri=WORDS, headers=HEADER_LISTS, body=st.binary(max_size=200))
def test_request_round_trip(method, uri, headers, body):
    request = Request(method, "sip:" + uri, Headers(headers), body)
    parsed = parse_message(request.to_bytes())
    assert isinstance(parsed, Request)
    assert (parsed.method, parsed.uri, parsed.version, parsed.body) == (method, "sip:" + uri, "SIP/2.0", body)
    assert list(parsed.headers) == [*request.headers, ("Content-Length", str(len(body)))]


@given(status=st.integers(100, 699),
       reason=st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp")),
                               min_size=1, max_size=8), max_size=3).map(" ".join),
       headers=HEADER_LISTS, body=st.binary(max_size=200))
def test_response_round_trip(status, reason, headers, body):
    response = Response(status, reason, Headers(headers), body)
    parsed = parse_message(response.to_bytes())
    assert isinstance(parsed, Response)
    assert (parsed.status, parsed.reason, parsed.body) == (status, reason, body)
    assert list(parsed.headers) == [*response.headers, ("Content-Length", str(len(body)))]


@given(headers=HEADER_LISTS, body=st.binary(max_size=100), cuts=st.lists(st.integers(0, 400), max_size=6))
def test_stream_parser_agrees_with_the_datagram_parser(headers, body, cuts):
    data = Request("MESSAGE", "sip:a@b", Headers(headers), body).to_bytes()
    parser = StreamParser()
    got = []
    for start, end in zip([0, *sorted(cuts)], [*sorted(cuts), len(data)]):
        parser.feed(data[start:end])
        message = parser.next_message()
        got += [message] if message is not None else []
    assert got == [parse_message(data)]


@given(st.binary(max_size=300) | st.builds(lambda a, b: a + b"\r\n\r\n" + b,
                                           st.sampled_from([INVITE[:300], b"SIP/2.0 200 OK\r\nl: 5"]),
                                           st.binary(max_size=50)))
def test_any_bytes_parse_or_raise_a_sip_error(data):
    try:
        message = parse_message(data)
    except SipError:
        return
    if isinstance(message, Request):
        try:
            validate_request(message)
        except BadRequest:
            pass
