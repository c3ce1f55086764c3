"""Registration through the sans-IO user agent, against a registrar played in plain data."""

from __future__ import annotations

import hashlib
import re

import pytest

from sipgw.sip.message import Request, make_response, parse_message, parse_name_addr, parse_via
from sipgw.sip.register import Account, Registered, RegistrationFailed, Unregistered
from sipgw.sip.transaction import TIMEOUT
from sipgw.sip.ua import UserAgent

REGISTRAR = ("127.0.0.1", 5080)
ACCOUNT = Account(registrar=REGISTRAR, aor="sip:trivox@pbx.example", username="trivox", password="s3cret",
                  expires=300)


@pytest.fixture
def ua() -> UserAgent:
    return UserAgent(port=5060, host_for=lambda peer: "127.0.0.1")


def sent_requests(ua: UserAgent) -> list[Request]:
    out = []
    for data, dest in ua.outgoing():
        assert dest == REGISTRAR
        message = parse_message(data)
        assert isinstance(message, Request)
        out.append(message)
    return out


def reply(ua: UserAgent, request: Request, status: int, now: float, headers=()) -> None:
    response = make_response(request, status, to_tag="reg1", headers=headers)
    ua.receive(response.to_bytes(), REGISTRAR, now)


def expected_response(request: Request, nonce: str, password: str = "s3cret") -> str:
    """What the registrar computes (RFC 2617 section 3.2.2), written out independently."""
    auth = request.headers.get("Authorization")
    fields = dict(re.findall(r'(\w+)="?([^",]*)"?', auth))
    md5 = lambda text: hashlib.md5(text.encode()).hexdigest()  # noqa: E731
    ha1 = md5(f"trivox:asterisk:{password}")
    ha2 = md5(f"REGISTER:{fields['uri']}")
    return md5(f"{ha1}:{nonce}:{fields['nc']}:{fields['cnonce']}:auth:{ha2}")


def test_register_with_digest_challenge_then_refresh_before_expiry(ua):
    ua.register(ACCOUNT, 0.0)
    (first,) = sent_requests(ua)
    assert first.uri == "sip:pbx.example" and first.headers.get("Expires") == "300"
    assert first.headers.get("Contact") == "<sip:trivox@127.0.0.1:5060>"
    assert "Authorization" not in first.headers
    reply(ua, first, 401, 0.1, [("WWW-Authenticate", 'Digest realm="asterisk", nonce="n1", qop="auth"')])
    (second,) = sent_requests(ua)
    assert second.headers.get("Call-ID") == first.headers.get("Call-ID")
    assert parse_name_addr(second.headers.get("From")).tag == parse_name_addr(first.headers.get("From")).tag
    assert second.headers.get("CSeq") == "2 REGISTER"
    auth = second.headers.get("Authorization")
    assert re.search(r'response="([0-9a-f]+)"', auth).group(1) == expected_response(second, "n1")
    reply(ua, second, 200, 0.2, [("Contact", "<sip:trivox@127.0.0.1:5060>;expires=120")])
    assert ua.events() == [Registered("sip:trivox@pbx.example", 120)]
    # refreshed a minute before the 120 s lapse (or at half-life, whichever is later)
    assert ua.registrations[0].deadline == pytest.approx(60.2)
    ua.handle_timers(60.2)
    (refresh,) = sent_requests(ua)
    assert refresh.headers.get("CSeq") == "3 REGISTER"
    # the refresh answers the last challenge again, with the next nonce count
    assert "nc=00000002" in refresh.headers.get("Authorization")
    assert re.search(r'response="([0-9a-f]+)"', refresh.headers.get("Authorization")).group(1) == \
        expected_response(refresh, "n1")


def test_wrong_password_is_reported_not_retried_in_a_loop(ua):
    ua.register(ACCOUNT, 0.0)
    (first,) = sent_requests(ua)
    challenge = [("WWW-Authenticate", 'Digest realm="asterisk", nonce="n1", qop="auth"')]
    reply(ua, first, 401, 0.1, challenge)
    (second,) = sent_requests(ua)
    reply(ua, second, 401, 0.2, challenge)  # same nonce again: refused
    assert sent_requests(ua) == []
    (event,) = ua.events()
    assert isinstance(event, RegistrationFailed) and "credentials for 'trivox' were refused" in event.reason


def test_stale_nonce_is_answered_again(ua):
    ua.register(ACCOUNT, 0.0)
    (first,) = sent_requests(ua)
    reply(ua, first, 407, 0.1, [("Proxy-Authenticate", 'Digest realm="asterisk", nonce="n1", qop="auth"')])
    (second,) = sent_requests(ua)
    assert "Proxy-Authorization" in second.headers
    reply(ua, second, 407, 0.2, [("Proxy-Authenticate", 'Digest realm="asterisk", nonce="n1", qop="auth", stale=true')])
    (third,) = sent_requests(ua)
    assert "nc=00000002" in third.headers.get("Proxy-Authorization")


def test_interval_too_brief_asks_again_with_min_expires(ua):
    ua.register(ACCOUNT, 0.0)
    (first,) = sent_requests(ua)
    reply(ua, first, 423, 0.1, [("Min-Expires", "600")])
    (second,) = sent_requests(ua)
    assert second.headers.get("Expires") == "600"
    reply(ua, second, 200, 0.2)  # no expiry in the answer: what we asked for
    assert ua.events() == [Registered("sip:trivox@pbx.example", 600)]


def test_lost_registrar_is_retried_with_backoff(ua):
    ua.register(ACCOUNT, 0.0)
    sent_requests(ua)
    now, failures, attempts = 0.0, [], []
    while len(failures) < 3:
        now = ua.next_deadline()
        ua.handle_timers(now)
        attempts += [(now, r.headers.get("CSeq")) for r in sent_requests(ua)]
        failures += [e for e in ua.events() if isinstance(e, RegistrationFailed)]
    assert [f.retry_in for f in failures] == [5.0, 10.0, 20.0]
    assert failures[0].reason == "no response from the registrar"
    first_tries = {}
    for when, cseq in attempts:
        first_tries.setdefault(cseq, when)
    # Timer F (64*T1) ends each try; the next REGISTER follows after the backoff
    assert first_tries["2 REGISTER"] == pytest.approx(TIMEOUT + 5.0)
    assert first_tries["3 REGISTER"] == pytest.approx(2 * TIMEOUT + 5.0 + 10.0)


def test_unregister_sends_expires_zero(ua):
    ua.register(ACCOUNT, 0.0)
    (first,) = sent_requests(ua)
    reply(ua, first, 200, 0.1)
    ua.events()
    ua.unregister_all(5.0)
    (bye,) = sent_requests(ua)
    assert bye.headers.get("Expires") == "0" and bye.headers.get("CSeq") == "2 REGISTER"
    reply(ua, bye, 200, 5.1)
    assert ua.events() == [Unregistered("sip:trivox@pbx.example")]
    assert ua.registrations[0].deadline is None  # nothing more to refresh


def reply_via(ua: UserAgent, request: Request, status: int, now: float, received: str, rport: int,
              headers=()) -> None:
    """A registrar's answer whose Via says where it saw the request come from (RFC 3581)."""
    branch = parse_via(request.headers.get("Via")).branch
    request.headers.remove("Via")
    request.headers.add("Via", f"SIP/2.0/UDP 127.0.0.1:5060;branch={branch};received={received};rport={rport}")
    reply(ua, request, status, now, headers)


def test_behind_nat_the_contact_moves_to_the_address_the_registrar_sees():
    ua = UserAgent(port=5060, host_for=lambda peer: "127.0.0.1", learn_address=True)
    ua.register(ACCOUNT, 0.0)
    (first,) = sent_requests(ua)
    reply_via(ua, first, 200, 0.1, "198.51.100.7", 40123)
    (moved,) = sent_requests(ua)
    # the new Contact, and the old binding removed in the same REGISTER
    assert moved.headers.get_all("Contact") == ["<sip:trivox@198.51.100.7:40123>",
                                                "<sip:trivox@127.0.0.1:5060>;expires=0"]
    assert ua.contact(REGISTRAR[0]) == "<sip:trivox@198.51.100.7:40123>"  # what calls from it see
    assert ua.public_host(REGISTRAR[0]) == "198.51.100.7" and ua.public_host("192.0.2.1") is None
    reply_via(ua, moved, 200, 0.2, "198.51.100.7", 40123)
    assert sent_requests(ua) == []  # settled: no REGISTER loop
    ua.handle_timers(ua.registrations[0].deadline)
    (refresh,) = sent_requests(ua)
    assert refresh.headers.get_all("Contact") == ["<sip:trivox@198.51.100.7:40123>"]


def test_without_learning_the_contact_stays_as_configured(ua):
    ua.register(ACCOUNT, 0.0)
    (first,) = sent_requests(ua)
    reply_via(ua, first, 200, 0.1, "198.51.100.7", 40123)
    assert sent_requests(ua) == []
    assert ua.contact(REGISTRAR[0]) == "<sip:trivox@127.0.0.1:5060>"


def test_options_keepalive_and_a_registrar_that_goes_silent():
    ua = UserAgent(port=5060, host_for=lambda peer: "127.0.0.1", keepalive=30.0)
    ua.register(ACCOUNT, 0.0)
    (first,) = sent_requests(ua)
    reply(ua, first, 200, 0.1, [("Expires", "3600")])
    ua.events()
    ua.handle_timers(30.1)
    (probe,) = sent_requests(ua)
    assert probe.method == "OPTIONS" and probe.uri == "sip:pbx.example"
    reply(ua, probe, 404, 30.2)  # any answer proves the registrar is there
    assert ua.events() == []
    ua.handle_timers(60.2)
    (probe,) = sent_requests(ua)
    assert probe.method == "OPTIONS"
    ua.handle_timers(60.2 + TIMEOUT)  # no answer at all: Timer F (the resends went out meanwhile)
    ua.outgoing()
    (failed,) = ua.events()
    assert isinstance(failed, RegistrationFailed) and "stopped answering" in failed.reason
    ua.handle_timers(ua.next_deadline())
    assert [r.method for r in sent_requests(ua)] == ["REGISTER"]
