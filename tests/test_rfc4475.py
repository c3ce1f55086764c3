"""RFC 4475 torture messages through the sans-IO core.

The 49 messages are read from the ``shared/rfc4475`` directory beside the repository
(never copied here); its README summarises what the RFC expects of each. Two tables:

- ``OUTCOME``: what the parser and ``validate_request`` make of each message, the
  layer that decides "drop" (ParseError), "answer 400/505" (BadRequest) or "hand it on".
- ``FACTS``: for messages the RFC calls valid or leaves to the application (unknown
  scheme, Require, Content-Type, Accept, Max-Forwards 0, ...), the fact the application
  needs, read through the typed header views.

A last table drives a whole UserAgent to check what trivox answers as an endpoint.
Nothing is sent anywhere: the user agent only returns datagrams.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from sipgw.sip.message import (
    BadRequest,
    ParseError,
    Request,
    Response,
    parse_cseq,
    parse_message,
    parse_name_addr,
    parse_uri,
    parse_via,
    validate_request,
)
from sipgw.sip.sdp import answer_offer, parse_sdp
from sipgw.sip.ua import IncomingCall, UserAgent

TORTURE = Path(__file__).resolve().parents[2] / "shared" / "rfc4475"

VALID = "valid"  # parses, and a request passes validate_request
DROP = "drop"  # ParseError: not answerable, drop and log


def bad(status: int, stage: str) -> tuple[int, str]:
    """BadRequest with ``status``, raised by parse_message ("parse") or validate_request ("validate")."""
    return (status, stage)


# file -> outcome at the parser/validator level. Where the RFC allows a liberal reading,
# the comment says which one trivox takes.
OUTCOME: dict[str, Any] = {
    # 3.1.1 valid messages
    "wsinv": VALID,
    "intmeth": VALID,
    "esc01": VALID,
    "escnull": VALID,
    "esc02": VALID,
    "lwsdisp": VALID,  # strictly invalid grammar, but the RFC asks elements to accept it
    "longreq": VALID,
    "dblreq": VALID,  # the REGISTER; the trailing INVITE-like octets are ignored
    "semiuri": VALID,
    "transports": VALID,
    "mpart01": VALID,
    "unreason": VALID,
    "noreason": VALID,
    # 3.1.2 invalid messages
    "badinv01": bad(400, "validate"),  # ;;,;,, in Via
    "clerr": bad(400, "parse"),  # UDP: Content-Length larger than the datagram
    "ncl": bad(400, "parse"),
    "scalar02": bad(400, "validate"),  # CSeq above 2**32-1
    "scalarlg": VALID,  # a response: framed fine; its CSeq fails parse_cseq, so it is discarded (FACTS)
    "quotbal": bad(400, "validate"),
    "ltgtruri": bad(400, "validate"),
    "lwsruri": bad(400, "parse"),
    "lwsstart": bad(400, "parse"),
    "trws": bad(400, "parse"),
    "escruri": VALID,  # liberal: the escaped headers stay inside the URI, never become headers
    "baddate": VALID,  # the Date does not matter to us, so it is not checked
    "regbadct": VALID,  # liberal: the brackets are inferred (RFC: "may infer")
    "badaspec": VALID,  # liberal: the spaces inside <> are ignored
    "baddn": VALID,  # liberal: the display name is taken as written, re-quoted when sent
    "badvers": bad(505, "parse"),
    "mismatch01": bad(400, "validate"),
    # The RFC prefers 501 (unknown method) and accepts 400: the validator, which runs
    # before any method dispatch, finds the CSeq mismatch first, so trivox sends 400.
    "mismatch02": bad(400, "validate"),
    "bigcode": DROP,
    # 3.2 transaction layer
    "badbranch": VALID,  # bare cookie branch: the UA falls back to RFC 2543 matching
    # 3.3 application layer
    "insuf": bad(400, "validate"),
    "unkscm": VALID,  # 416 is the application's answer (FACTS)
    "novelsc": VALID,
    "unksm2": VALID,
    "bext01": VALID,
    "invut": VALID,
    "regaut01": VALID,
    "multi01": bad(400, "validate"),
    "mcl01": bad(400, "parse"),
    "bcast": VALID,
    "zeromf": VALID,
    "cparam01": VALID,
    "cparam02": VALID,
    "regescrt": VALID,
    "sdp01": VALID,
    # 3.4 backward compatibility
    "inv2543": VALID,
}


def files() -> list[Path]:
    found = sorted(TORTURE.glob("*.dat"))
    assert len(found) == 49, f"expected the 49 RFC 4475 messages in {TORTURE}"
    return found


def load(name: str) -> Request | Response:
    return parse_message((TORTURE / f"{name}.dat").read_bytes())


def outcome(data: bytes) -> Any:
    try:
        message = parse_message(data)
    except ParseError:
        return DROP
    except BadRequest as exc:
        assert exc.request is not None  # so the UA can answer from what parsed
        return bad(exc.status, "parse")
    if isinstance(message, Request):
        try:
            validate_request(message)
        except BadRequest as exc:
            return bad(exc.status, "validate")
    return VALID


def test_every_message_has_an_expectation():
    assert {path.stem for path in files()} == set(OUTCOME)


@pytest.mark.parametrize("path", files(), ids=lambda p: p.stem)
def test_parser_and_validator_outcome(path):
    assert outcome(path.read_bytes()) == OUTCOME[path.stem]


def uri_of(name: str, header: str, index: int = 0) -> str:
    return parse_name_addr(load(name).headers.get_all(header)[index]).uri


def raises(error: type[Exception], function: Callable[[], object]) -> bool:
    try:
        function()
    except error:
        return True
    return False


SDP_OFFER_OPTIONS = {"local_address": "198.51.100.7", "rtp_port": 10002, "session_id": 1}

# (file, what the application needs, how to read it, expected)
FACTS: list[tuple[str, str, Callable[[], object], object]] = [
    ("wsinv", "Via values", lambda: [parse_via(v).host for v in load("wsinv").headers.get_all("Via")],
     ["192.0.2.2", "spindle.example.com", "192.168.255.111"]),
    ("wsinv", "folded CSeq with leading zeros", lambda: parse_cseq(load("wsinv").headers.get("CSeq")).number, 9),
    ("wsinv", "Max-Forwards", lambda: load("wsinv").headers.get("max-forwards"), "0068"),
    ("wsinv", "To tag with LWS around =", lambda: parse_name_addr(load("wsinv").headers.get("To")).tag,
     "1918181833n"),
    ("wsinv", "From display with escapes", lambda: parse_name_addr(load("wsinv").headers.get("From")).display,
     'J Rosenberg \\"'),
    ("wsinv", "folded unknown header", lambda: load("wsinv").headers.get("NewFangledHeader"),
     "newfangled value continued newfangled value"),
    ("wsinv", "Contact params", lambda: parse_name_addr(load("wsinv").headers.get("Contact")).params,
     {"newparam": "newvalue", "secondparam": None, "q": "0.33"}),
    ("wsinv", "body framed by Content-Length", lambda: len(load("wsinv").body), 150),
    ("intmeth", "method", lambda: load("intmeth").method, "!interesting-Method0123456789_*+`.%indeed'~"),
    ("intmeth", "user and password", lambda: (parse_uri(load("intmeth").uri).user[:5],
                                              parse_uri(load("intmeth").uri).password[-12:]),
     ("1_unu", "(doesn't-it)")),
    ("intmeth", "NUL in a quoted-pair", lambda: parse_name_addr(load("intmeth").headers.get("To")).display,
     "BEL:\x07 NUL:\x00 DEL:\x7f"),
    ("intmeth", "token display name", lambda: parse_name_addr(load("intmeth").headers.get("From")).display,
     "token1~` token2'+_ token3*%!.-"),
    ("intmeth", "UTF-8 header value", lambda: load("intmeth").headers.get("extensionHeader-!.%*+_`'~"),
     "\ufeff大停電"),
    ("esc01", "escapes kept, never unescaped twice", lambda: parse_uri(load("esc01").uri).user,
     "sips%3Auser%40example.com"),
    ("esc01", "escaped URI param value", lambda: parse_uri(uri_of("esc01", "Contact")).params["n%61me"],
     "v%61lue%25%34%31"),
    ("escnull", "%00 does not cut the user", lambda: parse_uri(uri_of("escnull", "To")).user, "null-%00-null"),
    ("escnull", "two distinct contacts",
     lambda: [parse_uri(uri_of("escnull", "Contact", i)).user for i in (0, 1)], ["%00", "%00%00"]),
    ("esc02", "method is not REGISTER", lambda: load("esc02").method, "RE%47IST%45R"),
    ("esc02", "C%6Fntact is not Contact", lambda: len(load("esc02").headers.get_all("Contact")), 2),
    ("lwsdisp", "display name without LWS", lambda: parse_name_addr(load("lwsdisp").headers.get("From")).display,
     "caller"),
    ("longreq", "34 Via values", lambda: len(load("longreq").headers.get_all("Via")), 34),
    ("longreq", "top Via", lambda: parse_via(load("longreq").headers.get("Via")).host, "sip33.example.com"),
    ("longreq", "long URI params", lambda: (parse_uri(uri_of("longreq", "To")).port,
                                            len(parse_uri(uri_of("longreq", "To")).params)), (6000, 3)),
    ("dblreq", "only the REGISTER", lambda: (load("dblreq").method, load("dblreq").body), ("REGISTER", b"")),
    ("semiuri", "user with ;", lambda: (parse_uri(load("semiuri").uri).user, parse_uri(load("semiuri").uri).params),
     ("user;par=u%40example.net", {})),
    ("semiuri", "folded Accept list", lambda: len(load("semiuri").headers.get_all("Accept")), 6),
    ("transports", "transports", lambda: [parse_via(v).transport for v in load("transports").headers.get_all("Via")],
     ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]),
    ("mpart01", "binary body with NULs", lambda: (len(load("mpart01").body), load("mpart01").body.count(b"\x00")),
     (553, 2)),
    ("unreason", "UTF-8 reason phrase", lambda: load("unreason").reason,
     "= 2**3 * 5**2 но сто девяносто девять - простое"),
    ("noreason", "empty reason phrase", lambda: (load("noreason").status, load("noreason").reason), (100, "")),
    ("scalarlg", "CSeq overflows: discard", lambda: raises(BadRequest, lambda: parse_cseq(
        load("scalarlg").headers.get("CSeq"))), True),
    ("escruri", "escaped headers stay in the URI", lambda: parse_uri(load("escruri").uri).headers,
     {"Route": "%3Csip:example.com%3E"}),
    ("escruri", "never a real Route", lambda: "Route" in load("escruri").headers, False),
    ("baddate", "Date kept as text", lambda: load("baddate").headers.get("Date"), "Fri, 01 Jan 2010 16:00:00 EST"),
    ("regbadct", "inferred <>", lambda: parse_name_addr(load("regbadct").headers.get("Contact")),
     parse_name_addr("<sip:user@example.com?Route=%3Csip:sip.example.com%3E>")),
    ("badaspec", "spaces in <> ignored", lambda: uri_of("badaspec", "To"), "sip:t.watson@example.org"),
    ("baddn", "unquoted display with a comma",
     lambda: str(parse_name_addr(load("baddn").headers.get("From"))),
     '"Bell, Alexander" <sip:a.g.bell@example.com>;tag=43'),
    ("badbranch", "bare cookie branch", lambda: parse_via(load("badbranch").headers.get("Via")).branch, "z9hG4bK"),
    ("unkscm", "scheme for a 416", lambda: load("unkscm").uri.split(":")[0], "nobodyKnowsThisScheme"),
    ("unkscm", "not a sip URI", lambda: raises(ParseError, lambda: parse_uri(load("unkscm").uri)), True),
    ("novelsc", "scheme for a 416", lambda: load("novelsc").uri.split(":")[0], "soap.beep"),
    ("unksm2", "other schemes in headers",
     lambda: [uri_of("unksm2", h) for h in ("To", "From", "Contact")],
     ["isbn:2983792873", "http://www.example.com", "name:John_Smith"]),
    ("bext01", "Require for a 420", lambda: load("bext01").headers.get_all("Require"),
     ["nothingSupportsThis", "nothingSupportsThisEither"]),
    ("bext01", "Proxy-Require", lambda: load("bext01").headers.get_all("Proxy-Require"),
     ["noProxiesSupportThis", "norDoAnyProxiesSupportThis"]),
    ("invut", "Content-Type for a 415", lambda: load("invut").headers.get("Content-Type"),
     "application/unknownformat"),
    ("regaut01", "Authorization kept as is", lambda: load("regaut01").headers.get("Authorization"),
     "NoOneKnowsThisScheme opaque-data=here"),
    ("bcast", "broadcast Via", lambda: [parse_via(v).host for v in load("bcast").headers.get_all("Via")],
     ["192.0.2.198", "255.255.255.255"]),
    ("zeromf", "Max-Forwards 0", lambda: load("zeromf").headers.get("Max-Forwards"), "0"),
    ("cparam01", "contact-param, not url-param",
     lambda: (parse_name_addr(load("cparam01").headers.get("Contact")).params,
              parse_uri(uri_of("cparam01", "Contact")).params), ({"unknownparam": None}, {})),
    ("cparam02", "url-param, not contact-param",
     lambda: (parse_name_addr(load("cparam02").headers.get("Contact")).params,
              parse_uri(uri_of("cparam02", "Contact")).params), ({}, {"unknownparam": None})),
    ("regescrt", "escaped Route kept in the contact", lambda: str(parse_uri(uri_of("regescrt", "Contact"))),
     "sip:user@example.com?Route=%3Csip:sip.example.com%3E"),
    ("sdp01", "Accept lacks SDP: 406", lambda: load("sdp01").headers.get_all("Accept"), ["text/nobodyKnowsThis"]),
    ("sdp01", "its offer is fine", lambda: answer_offer(parse_sdp(load("sdp01").body), **SDP_OFFER_OPTIONS)[1].codec,
     "PCMU"),
    ("inv2543", "RFC 2543 request", lambda: (
        "Max-Forwards" in load("inv2543").headers, parse_via(load("inv2543").headers.get("Via")).branch,
        parse_name_addr(load("inv2543").headers.get("From")).tag), (False, None, None)),
    ("inv2543", "body is the rest of the datagram",
     lambda: load("inv2543").body.startswith(b"v=0") and load("inv2543").body.endswith(b"RTP/AVP 0\r\n"), True),
]


@pytest.mark.parametrize(("name", "fact", "read", "expected"), FACTS, ids=[f"{f[0]}: {f[1]}" for f in FACTS])
def test_what_the_application_sees(name, fact, read, expected):
    assert read() == expected


def test_errors_name_the_problem():
    for name, needle in [("insuf", "Missing"), ("multi01", "More than one"), ("mismatch01", "CSeq method"),
                         ("mcl01", "Content-Length"), ("ncl", "Content-Length"), ("quotbal", "quoted"),
                         ("badinv01", "empty parameter")]:
        data = (TORTURE / f"{name}.dat").read_bytes()
        with pytest.raises(BadRequest) as info:
            validate_request(parse_message(data))  # type: ignore[arg-type]
        assert needle in info.value.reason, name


# --- the endpoint: what trivox answers ---------------------------------------------------

# file -> statuses the UserAgent sends (empty: nothing, the message is dropped).
ENDPOINT: dict[str, list[int]] = {
    "wsinv": [481],  # well-formed in-dialog INVITE (To has a tag) for a dialog we do not have
    "intmeth": [501],  # unknown method: 501 with Allow
    "esc01": [100],
    "escnull": [405],  # valid REGISTER; we are not a registrar
    "esc02": [501],  # RE%47IST%45R is not REGISTER
    "lwsdisp": [200],
    "longreq": [100],
    "dblreq": [405],
    "semiuri": [200],
    "transports": [200],
    "mpart01": [405],  # MESSAGE: parsed, framed by Content-Length, not served
    "unreason": [],  # a response matching no transaction
    "noreason": [],
    "badinv01": [400],
    "clerr": [400],
    "ncl": [400],
    "scalar02": [400],
    "scalarlg": [],
    "quotbal": [400],
    "ltgtruri": [400],
    "lwsruri": [400],
    "lwsstart": [400],
    "trws": [400],
    "escruri": [100],
    "baddate": [100],
    "regbadct": [405],
    "badaspec": [200],
    "baddn": [200],
    "badvers": [505],
    "mismatch01": [400],
    "mismatch02": [400],
    "bigcode": [],
    "badbranch": [200],
    "insuf": [400],
    "unkscm": [416],
    "novelsc": [416],
    "unksm2": [405],
    "bext01": [420],
    "invut": [415],
    "regaut01": [405],  # a non-registrar endpoint sends 405
    "multi01": [400],
    "mcl01": [400],
    "bcast": [],  # a 200 for nothing of ours: discarded, never forwarded
    "zeromf": [200],  # an endpoint processes Max-Forwards: 0 normally
    "cparam01": [405],
    "cparam02": [405],
    "regescrt": [405],
    "sdp01": [406],
    "inv2543": [100],
}


@pytest.mark.parametrize("path", files(), ids=lambda p: p.stem)
def test_endpoint_answers_as_rfc4475_says(path):
    ua = UserAgent(port=5060, host_for=lambda peer: "127.0.0.1")
    ua.receive(path.read_bytes(), ("127.0.0.1", 5070), 0.0)
    sent = [(parse_message(data), dest) for data, dest in ua.outgoing()]
    assert [m.status for m, _ in sent] == ENDPOINT[path.stem]
    # the source address, never a Via host (RFC 3261 section 18.2.2 with RFC 3581)
    assert all(dest[0] == "127.0.0.1" for _, dest in sent)
    events = ua.events()
    assert bool(events) == (ENDPOINT[path.stem] == [100])
    assert all(isinstance(event, IncomingCall) for event in events)
