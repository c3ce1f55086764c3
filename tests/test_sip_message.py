"""SIP message parsing and serialization with plain data (RFC 3261 sections 7, 18.3, 20)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sipgw.sip.message import (
    BadRequest,
    Headers,
    ParseError,
    Request,
    Response,
    make_response,
    parse_cseq,
    parse_message,
    parse_name_addr,
    parse_uri,
    parse_via,
    validate_request,
)

INVITE = (
    b"INVITE sip:bob@example.com SIP/2.0\r\n"
    b"v: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK776asdhds, SIP/2.0/TCP proxy.example.com;branch=z9hG4bKx\r\n"
    b"Via: SIP/2.0/UDP [2001:db8::1]:5070;branch=z9hG4bK3\r\n"
    b"Max-Forwards: 70\r\n"
    b"t: Bob <sip:bob@example.com>\r\n"
    b'f: "Alice \\"A\\"" <sip:alice@example.com;transport=udp>;tag=1928301774\r\n'
    b"i: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"m: <sip:alice@pc33.example.com>\r\n"
    b"Subject: a folded\r\n"
    b"   subject line\r\n"
    b"X-Unknown: kept as is\r\n"
    b"c: application/sdp\r\n"
    b"l: 4\r\n"
    b"\r\n"
    b"v=0\r\ntrailing octets ignored"
)


def test_compact_forms_folding_and_body_framing():
    message = parse_message(INVITE)
    assert isinstance(message, Request)
    assert (message.method, message.uri, message.version) == ("INVITE", "sip:bob@example.com", "SIP/2.0")
    assert message.headers.get("call-id") == "a84b4c76e66710@pc33.example.com"
    assert message.headers.get("Subject") == "a folded subject line"
    assert message.headers.get("x-unknown") == "kept as is"
    assert len(message.headers.get_all("Via")) == 3
    assert message.body == b"v=0\r"
    validate_request(message)


def test_serialization_uses_long_names_and_fixes_content_length():
    message = parse_message(INVITE)
    data = message.to_bytes()
    assert b"\r\nCall-ID: a84b4c76e66710@pc33.example.com\r\n" in data
    assert b"\r\nContent-Length: 4\r\n\r\nv=0\r" in data
    assert data.count(b"Content-Length") == 1
    again = parse_message(data)
    assert again.headers == message.headers and again.body == message.body


def test_headers_split_lists_outside_quotes_and_brackets():
    headers = Headers([("Contact", '"a, b" <sip:a@x;p=1,2>, <sip:b@y>'), ("Contact", "<sip:c@z>")])
    assert headers.get_all("contact") == ['"a, b" <sip:a@x;p=1,2>', "<sip:b@y>", "<sip:c@z>"]
    assert headers.get("m") == '"a, b" <sip:a@x;p=1,2>'
    headers.set("Contact", "<sip:only@here>")
    assert list(headers) == [("Contact", "<sip:only@here>")]


def test_response_parsing_and_empty_reason():
    response = parse_message(b"SIP/2.0 180 \r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nContent-Length: 0\r\n\r\n")
    assert isinstance(response, Response) and response.status == 180 and response.reason == ""


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\r\n\r\n",
        b"hello world\r\n\r\n",
        b"SIP/2.0 4294967301 Huge\r\nContent-Length: 0\r\n\r\n",
        b"SIP/2.0 99 Low\r\n\r\n",
        b"X" * 70000,
    ],
)
def test_garbage_is_a_parse_error(data):
    with pytest.raises(ParseError):
        parse_message(data)


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 9999\r\n\r\nshort", 400),
        (b"OPTIONS sip:x SIP/2.0\r\nContent-Length: -999\r\n\r\n", 400),
        (b"OPTIONS sip:x SIP/2.0\r\nContent-Length: 0\r\nl: 3\r\n\r\nabc", 400),
        (b"OPTIONS sip:x SIP/7.0\r\nContent-Length: 0\r\n\r\n", 505),
    ],
)
def test_broken_requests_are_bad_requests(data, status):
    with pytest.raises(BadRequest) as info:
        parse_message(data)
    assert info.value.status == status


def test_no_content_length_takes_the_rest_of_the_datagram():
    message = parse_message(b"INVITE sip:x SIP/2.0\r\nCall-ID: 1\r\n\r\nbody bytes")
    assert message.body == b"body bytes"


def request_with(**replace: str) -> Request:
    base = {
        "Via": "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1", "From": "<sip:a@x>;tag=1", "To": "<sip:b@y>",
        "Call-ID": "c1", "CSeq": "1 OPTIONS", "Max-Forwards": "70",
    }
    base.update(replace)
    return Request("OPTIONS", "sip:b@y", Headers((k, v) for k, v in base.items() if v))


@pytest.mark.parametrize(
    ("replace", "needle"),
    [
        ({"Call-ID": ""}, "Call-ID"),
        ({"From": ""}, "From"),
        ({"CSeq": "1 INVITE"}, "CSeq method"),
        ({"CSeq": "4294967296 OPTIONS"}, "2**32"),
        ({"CSeq": "one OPTIONS"}, "CSeq"),
        ({"Via": "SIP/2.0/UDP"}, "Via"),
        ({"To": '"unterminated <sip:b@y>'}, "quoted"),
        ({"Max-Forwards": "many"}, "Max-Forwards"),
    ],
)
def test_validate_request_names_the_problem(replace, needle):
    with pytest.raises(BadRequest) as info:
        validate_request(request_with(**replace))
    assert needle in info.value.reason


def test_repeated_single_headers_are_rejected():
    request = request_with()
    request.headers.add("Call-ID", "c2")
    with pytest.raises(BadRequest, match="More than one Call-ID"):
        validate_request(request)


def test_make_response_copies_the_transaction_headers():
    request = parse_message(INVITE)
    response = make_response(request, 486, to_tag="xyz", headers=[("Retry-After", "60")])
    assert response.reason == "Busy Here"
    assert response.headers.get_all("Via") == request.headers.get_all("Via")
    assert parse_name_addr(response.headers.get("To")).tag == "xyz"
    assert response.headers.get("From") == request.headers.get("From")
    assert response.headers.get("CSeq") == "314159 INVITE"
    assert response.headers.get("Retry-After") == "60"


def test_via_parsing():
    via = parse_via("SIP/2.0/udp [2001:db8::9]:5070 ;branch=z9hG4bKabc;rport;received=192.0.2.4")
    assert (via.transport, via.host, via.port, via.branch) == ("UDP", "2001:db8::9", 5070, "z9hG4bKabc")
    assert via.params["rport"] is None and via.params["received"] == "192.0.2.4"
    assert str(via) == "SIP/2.0/UDP [2001:db8::9]:5070;branch=z9hG4bKabc;rport;received=192.0.2.4"
    with pytest.raises(BadRequest):
        parse_via("SIP/2.0/UDP host;;branch=x")


def test_name_addr_parsing():
    value = parse_name_addr('"Alice \\"A\\"" <sip:alice@example.com;transport=udp>;tag=1928')
    assert value.display == '"Alice \\"A\\""' and value.uri == "sip:alice@example.com;transport=udp"
    assert value.tag == "1928"
    bare = parse_name_addr("sip:bob@example.com;tag=5")  # no <>: params are header params
    assert bare.uri == "sip:bob@example.com" and bare.tag == "5"
    assert str(bare.with_tag("6")) == "<sip:bob@example.com>;tag=6"
    assert parse_name_addr("Bob<sip:b@y>").display == "Bob"  # RFC 4475 lwsdisp


def test_cseq_and_uri():
    assert parse_cseq("  0010  INVITE ").number == 10
    uri = parse_uri("sips:user;par=u%40example.net:pw@[2001:db8::1]:5061;transport=tcp?Subject=hi")
    assert (uri.scheme, uri.host, uri.port) == ("sips", "2001:db8::1", 5061)
    assert uri.user == "user;par=u%40example.net" and uri.password == "pw"
    assert uri.params == {"transport": "tcp"} and uri.headers == {"Subject": "hi"}
    with pytest.raises(ParseError):
        parse_uri("tel:+1555")


TOKENS = st.text(alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~",
                 min_size=1, max_size=12)
VALUES = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=30)
HEADER_NAMES = TOKENS.filter(lambda name: name.lower() not in ("content-length", "l"))


@given(method=TOKENS, uri=VALUES, headers=st.lists(st.tuples(HEADER_NAMES, VALUES), max_size=8),
       body=st.binary(max_size=200))
def test_request_round_trip(method, uri, headers, body):
    request = Request(method, "sip:" + uri, Headers(headers), body)
    parsed = parse_message(request.to_bytes())
    assert isinstance(parsed, Request)
    assert (parsed.method, parsed.uri, parsed.body) == (request.method, request.uri, request.body)
    assert list(parsed.headers) == [*request.headers, ("Content-Length", str(len(body)))]


@given(status=st.integers(100, 699), reason=st.text(max_size=20).map(lambda s: " ".join(s.split())),
       headers=st.lists(st.tuples(HEADER_NAMES, VALUES), max_size=8), body=st.binary(max_size=200))
def test_response_round_trip(status, reason, headers, body):
    response = Response(status, reason, Headers(headers), body)
    parsed = parse_message(response.to_bytes())
    assert isinstance(parsed, Response)
    assert (parsed.status, parsed.reason, parsed.body) == (status, reason, body)
    assert list(parsed.headers)[:-1] == list(response.headers)
