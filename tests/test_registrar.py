"""The standalone registrar (RFC 3261 section 10.3) with plain data, and through the user agent."""

from __future__ import annotations

import pytest

from sipgw.sip.digest import DigestCredentials, DigestServer, parse_challenge
from sipgw.sip.message import Headers, Request, Response, parse_message
from sipgw.sip.registrar import Registrar
from sipgw.sip.ua import IncomingCall, UserAgent

PHONE = ("127.0.0.1", 5072)


def register(*contacts: str, expires: str | None = None, to: str = "1000", call_id: str = "reg-1",
             cseq: int = 1) -> Request:
    headers = Headers([("To", f"<sip:{to}@trivox>"), ("Call-ID", call_id), ("CSeq", f"{cseq} REGISTER")])
    for contact in contacts:
        headers.add("Contact", contact)
    if expires is not None:
        headers.add("Expires", expires)
    return Request("REGISTER", "sip:trivox", headers)


def test_bindings_are_kept_refreshed_listed_and_expire():
    registrar = Registrar(min_expires=60, max_expires=3600, default_expires=600)
    status, headers = registrar.register(register("<sip:1000@10.0.0.5:5062>;expires=120"), "1000", PHONE, 0.0)
    assert (status, headers) == (200, [("Contact", "<sip:1000@10.0.0.5:5062>;expires=120")])
    # a second contact from the Expires header, the first refreshed with the default
    status, headers = registrar.register(register("<sip:1000@10.0.0.5:5062>", "<sip:1000@10.0.0.6>", cseq=2),
                                         "1000", PHONE, 60.0)
    assert status == 200 and [v for _, v in headers] == ["<sip:1000@10.0.0.5:5062>;expires=600",
                                                         "<sip:1000@10.0.0.6>;expires=600"]
    assert registrar.deadline == 660.0
    assert [b.uri for b in registrar.bindings("1000", 659.0)] == ["sip:1000@10.0.0.5:5062", "sip:1000@10.0.0.6"]
    registrar.expire(660.0)
    assert registrar.bindings("1000", 660.0) == [] and registrar.deadline is None


def test_a_register_without_contact_is_a_query():
    registrar = Registrar()
    registrar.register(register("<sip:1000@10.0.0.5>", expires="300"), "1000", PHONE, 0.0)
    assert registrar.register(register(cseq=2), "1000", PHONE, 100.0) == \
        (200, [("Contact", "<sip:1000@10.0.0.5>;expires=200")])


def test_expires_zero_and_the_wildcard_remove_bindings():
    registrar = Registrar()
    registrar.register(register("<sip:1000@a>", "<sip:1000@b>", expires="300"), "1000", PHONE, 0.0)
    assert registrar.register(register("<sip:1000@a>;expires=0", cseq=2), "1000", PHONE, 1.0) == \
        (200, [("Contact", "<sip:1000@b>;expires=299")])
    assert registrar.register(register("*", expires="0", cseq=3), "1000", PHONE, 2.0) == (200, [])
    assert registrar.bindings("1000", 2.0) == []


@pytest.mark.parametrize(("request_", "status"), [
    (register("*", expires="300"), 400),  # a wildcard must come with Expires: 0
    (register("*", "<sip:1000@a>", expires="0"), 400),  # and alone
    (register("<sip:1000@a>", expires="30"), 423),  # shorter than our minimum
    (register("<sip:1000@a>", to="2000"), 403),  # a binding for someone else
])
def test_rules_of_section_10_3(request_, status):
    reply = Registrar(min_expires=60).register(request_, "1000", PHONE, 0.0)
    assert reply[0] == status
    if status == 423:
        assert reply[1] == [("Min-Expires", "60")]


def test_an_out_of_order_register_changes_nothing():
    registrar = Registrar()
    registrar.register(register("<sip:1000@a>", expires="300", cseq=5), "1000", PHONE, 0.0)
    assert registrar.register(register("<sip:1000@a>", expires="0", cseq=5), "1000", PHONE, 1.0)[0] == 500
    assert [b.uri for b in registrar.bindings("1000", 1.0)] == ["sip:1000@a"]
    assert registrar.register(register("<sip:1000@b>", call_id="other", cseq=1), "1000", PHONE, 1.0)[0] == 200


# --- through the user agent: standalone mode ----------------------------------------------

def standalone(challenge_invites: bool = False) -> UserAgent:
    return UserAgent(port=5060, host_for=lambda peer: "127.0.0.1", auth=DigestServer("trivox", {"1000": "s3cret"}),
                     registrar=Registrar(), challenge_invites=challenge_invites)


def send(ua: UserAgent, request: Request, now: float) -> None:
    request.headers.add("Via", f"SIP/2.0/UDP 127.0.0.1:5072;branch=z9hG4bK-{now}")
    request.headers.add("From", "<sip:1000@trivox>;tag=phone")
    request.headers.add("Max-Forwards", "70")
    ua.receive(request.to_bytes(), PHONE, now)


def exchange(ua: UserAgent, request: Request, now: float) -> Response:
    send(ua, request, now)
    responses = [parse_message(data) for data, _ in ua.outgoing()]
    return next(r for r in responses if isinstance(r, Response) and r.status != 100)


def authorized(request: Request, challenge: Response, password: str = "s3cret") -> Request:
    answer = DigestCredentials("1000", password).authorize(
        parse_challenge(challenge.headers.get("WWW-Authenticate")), request.method, request.uri)
    request.headers.add("Authorization", answer)
    return request


def test_a_phone_registers_with_digest_auth():
    ua = standalone()
    challenge = exchange(ua, register("<sip:1000@127.0.0.1:5072>"), 0.0)
    assert challenge.status == 401 and 'realm="trivox"' in challenge.headers.get("WWW-Authenticate")
    ok = exchange(ua, authorized(register("<sip:1000@127.0.0.1:5072>", cseq=2), challenge), 1.0)
    assert ok.status == 200 and ok.headers.get("Contact") == "<sip:1000@127.0.0.1:5072>;expires=3600"
    wrong = exchange(ua, authorized(register("<sip:1000@x>", cseq=3), challenge, "guess"), 2.0)
    assert wrong.status == 403  # a wrong password is refused, not challenged again in a loop
    assert [b.uri for b in ua.registrar.bindings("1000", 3.0)] == ["sip:1000@127.0.0.1:5072"]


def test_without_users_register_is_not_served():
    ua = UserAgent(port=5060, host_for=lambda peer: "127.0.0.1")
    assert exchange(ua, register("<sip:1000@x>"), 0.0).status == 405


SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n"


def invite(cseq: int) -> Request:
    headers = Headers([("To", "<sip:trivox@127.0.0.1>"), ("Call-ID", "inv-1"), ("CSeq", f"{cseq} INVITE"),
                       ("Contact", "<sip:1000@127.0.0.1:5072>"), ("Content-Type", "application/sdp")])
    return Request("INVITE", "sip:trivox@127.0.0.1", headers, SDP)


def test_challenged_invites_reach_the_tu_only_with_good_credentials():
    ua = standalone(challenge_invites=True)
    challenge = exchange(ua, invite(1), 0.0)
    assert challenge.status == 401 and ua.events() == []
    assert exchange(ua, authorized(invite(2), challenge, "guess"), 1.0).status == 403
    assert ua.events() == []
    send(ua, authorized(invite(3), challenge), 2.0)
    (event,) = ua.events()
    assert isinstance(event, IncomingCall)
