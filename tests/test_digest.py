"""Digest authentication against published vectors (RFC 2617 section 3.5, RFC 7616, curl's tests)."""

from __future__ import annotations

import re

import pytest

from sipgw.sip.digest import DigestCredentials, DigestError, parse_challenge


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
