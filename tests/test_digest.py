"""Digest authentication against published vectors (RFC 2617 section 3.5, RFC 7616, curl's tests)."""

from __future__ import annotations

import hashlib
import re

import pytest

from sipgw.sip.digest import DigestCredentials, DigestError, DigestServer, Verdict, parse_challenge
from sipgw.sip.message import Headers, Request


def field(header: str, name: str) -> str:
    match = re.search(rf'{name}="?([^",]*)"?', header)
    assert match, header
    return match.group(1)


def test_rfc2617_qop_auth_md5():
    challenge = parse_challenge('Digest realm="testrealm@host.com", qop="auth,auth-int", '
                                'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"')
    header = DigestCredentials("Mufasa", "Circle Of Life").authorize(challenge, "GET", "/dir/index.html",
                                                                      cnonce="0a4f113b")
    assert field(header, "response") == "6629fae49393a05397450978507c4ef1"
    assert "qop=auth" in header and "nc=00000001" in header
    assert field(header, "opaque") == "5ccc069c403ebaf9f0171e9517f40e41"


def test_no_qop_md5_rfc2069_style():
    challenge = parse_challenge('Digest realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
                                'opaque="5ccc069c403ebaf9f0171e9517f40e41"')
    header = DigestCredentials("Mufasa", "CircleOfLife").authorize(challenge, "GET", "/dir/index.html")
    assert field(header, "response") == "1949323746fe6a43ef61f9606e7febea"
    assert "qop" not in header


def test_sha256_without_qop():
    challenge = parse_challenge('Digest realm="testrealm", nonce="1053604145", algorithm="SHA-256"')
    header = DigestCredentials("testuser", "testpass").authorize(challenge, "GET", "/2061")
    assert field(header, "response") == "9dc55255f1a2537b838311674b621d45346b862a81631bb20e4ce356ef25062d"
    assert "algorithm=SHA-256" in header


def test_nonce_count_grows_per_nonce_and_restarts_for_a_new_one():
    credentials = DigestCredentials("alice", "secret")
    first = parse_challenge('Digest realm="asterisk", nonce="n1", qop="auth"')
    second = parse_challenge('Digest realm="asterisk", nonce="n2", qop="auth", stale=true', proxy=True)
    assert "nc=00000001" in credentials.authorize(first, "REGISTER", "sip:pbx")
    assert "nc=00000002" in credentials.authorize(first, "REGISTER", "sip:pbx")
    assert second.stale and second.header == "Proxy-Authorization"
    assert "nc=00000001" in credentials.authorize(second, "REGISTER", "sip:pbx")


def test_quoted_values_with_commas_and_escapes():
    challenge = parse_challenge(r'Digest realm="a \"b\", c", nonce="x,y", qop=auth')
    assert challenge.realm == 'a "b", c' and challenge.nonce == "x,y" and challenge.qop == ("auth",)
    header = DigestCredentials("u", "p").authorize(challenge, "REGISTER", "sip:x")
    assert r'realm="a \"b\", c"' in header


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('Basic realm="x"', "unsupported authentication scheme"),
        ('Digest nonce="n"', "without realm or nonce"),
        ('Digest realm="r", nonce="n", algorithm=SHA-1', "unsupported digest algorithm"),
        ('Digest realm="r", nonce="n", qop="auth-int"', "only auth is answered"),
    ],
)
def test_unanswerable_challenges_say_why(value, message):
    with pytest.raises(DigestError, match=message):
        parse_challenge(value)


# --- the server side ------------------------------------------------------------------

def register(authorization: str | None = None, method: str = "REGISTER") -> Request:
    headers = Headers([("To", "<sip:1000@trivox>"), ("CSeq", f"1 {method}")])
    if authorization is not None:
        headers.add("Authorization", authorization)
    return Request(method, "sip:trivox", headers)


SERVER = DigestServer("trivox", {"1000": "s3cret"}, algorithms=("SHA-256", "MD5"), secret=b"k" * 32)


def test_our_own_client_answers_our_challenges_in_every_offered_algorithm():
    values = SERVER.challenge(10.0)
    assert [parse_challenge(v).algorithm for v in values] == ["SHA-256", "MD5"]  # strongest first
    assert SERVER.challenge(10.0) != values  # each challenge has a nonce of its own
    for index in range(2):
        challenge = parse_challenge(SERVER.challenge(10.0)[index])
        answer = DigestCredentials("1000", "s3cret").authorize(challenge, "REGISTER", "sip:trivox")
        assert SERVER.check(register(answer), 11.0).username == "1000"


def test_an_rfc2069_answer_without_qop_is_accepted():
    # What pyVoIP sends: MD5 over HA1:nonce:HA2, written out here independently
    nonce = field(SERVER.challenge(0.0)[1], "nonce")
    md5 = lambda text: hashlib.md5(text.encode()).hexdigest()  # noqa: E731
    uri = "sip:trivox;transport=UDP"
    response = md5(f"{md5('1000:trivox:s3cret')}:{nonce}:{md5('REGISTER:' + uri)}")
    answer = f'Digest username="1000",realm="trivox",nonce="{nonce}",uri="{uri}",response="{response}",algorithm=MD5'
    assert SERVER.check(register(answer), 1.0).username == "1000"


def answer_for(password: str = "s3cret", *, user: str = "1000", now: float = 0.0, realm: str = "trivox") -> str:
    challenge = parse_challenge(SERVER.challenge(now)[1])
    if realm != "trivox":
        challenge = parse_challenge(f'Digest realm="{realm}", nonce="{challenge.nonce}", qop="auth"')
    return DigestCredentials(user, password).authorize(challenge, "REGISTER", "sip:trivox")


@pytest.mark.parametrize(("authorization", "reason"), [
    (None, "no Authorization for realm 'trivox'"),
    (answer_for("wrong"), "wrong password for '1000'"),
    (answer_for(user="2000"), "unknown user '2000'"),
    (answer_for(realm="elsewhere"), "no Authorization for realm 'trivox'"),
    (answer_for().replace('nonce="', 'nonce="f'), "a nonce we did not issue"),
    (answer_for().replace("algorithm=MD5", "algorithm=SHA-512-256"), "algorithm 'SHA-512-256' was not offered"),
    (re.sub(r', cnonce="[^"]*"', "", answer_for()), "qop 'auth' without nc and cnonce, or not auth"),
])
def test_bad_credentials_are_refused_saying_why(authorization, reason):
    verdict = SERVER.check(register(authorization), 1.0)
    assert verdict.username is None and not verdict.stale and verdict.reason == reason


def test_an_old_nonce_is_stale_and_a_replayed_count_refused():
    old = answer_for(now=0.0)
    assert SERVER.check(register(old), 301.0) == Verdict(stale=True, reason="nonce expired")
    fresh = answer_for(now=400.0)
    assert SERVER.check(register(fresh), 401.0).username == "1000"
    assert SERVER.check(register(fresh), 402.0).reason == "nonce count replayed"
    # the answer is bound to the method: the same credentials do not work for an INVITE
    assert SERVER.check(register(fresh, method="INVITE"), 402.0).reason == "wrong password for '1000'"
