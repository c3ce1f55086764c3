"""Digest authentication for SIP, client side (RFC 3261 section 22.4, RFC 7616, RFC 8760).

A registrar or proxy answers 401 (WWW-Authenticate) or 407 (Proxy-Authenticate) with a
challenge; ``parse_challenge`` reads it and ``DigestCredentials.authorize`` computes the
Authorization (or Proxy-Authorization) value for the retried request. MD5 and SHA-256
(RFC 8760 adds SHA-256 and SHA-512-256 to SIP), with or without ``-sess``, and with
``qop=auth`` (cnonce and a nonce count that grows per nonce) or no qop (RFC 2069 style,
still what many PBXes send). ``qop=auth-int`` is not offered by Asterisk or Kamailio by
default and is refused with a clear error rather than answered wrongly.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field

ALGORITHMS = {
    "MD5": hashlib.md5,
    "SHA-256": hashlib.sha256,
    "SHA-512-256": lambda data=b"": hashlib.new("sha512_256", data),
}

# auth-param = token "=" ( token / quoted-string )   (RFC 7235 section 2.1)
_PARAM = re.compile(r'\s*([A-Za-z0-9_\-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s,]*)\s*,?')


class DigestError(ValueError):
    """A challenge we cannot answer; the message says why, in one line."""


@dataclass(frozen=True)
class Challenge:
    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False
    #: 401 -> "Authorization", 407 -> "Proxy-Authorization" (RFC 3261 section 22.3)
    header: str = "Authorization"


def parse_challenge(value: str, *, proxy: bool = False) -> Challenge:
    """One ``Digest ...`` challenge from WWW-Authenticate or Proxy-Authenticate."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise DigestError(f"unsupported authentication scheme {scheme!r}")
    params: dict[str, str] = {}
    for match in _PARAM.finditer(rest):
        name, raw = match.group(1).lower(), match.group(2)
        params[name] = re.sub(r"\\(.)", r"\1", raw[1:-1]) if raw.startswith('"') else raw
    if "realm" not in params or "nonce" not in params:
        raise DigestError("digest challenge without realm or nonce")
    algorithm = params.get("algorithm", "MD5")
    if algorithm.upper().removesuffix("-SESS") not in ALGORITHMS:
        raise DigestError(f"unsupported digest algorithm {algorithm!r}")
    qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
    if qop and "auth" not in qop:
        raise DigestError(f"unsupported qop {params['qop']!r} (only auth is answered)")
    return Challenge(
        realm=params["realm"], nonce=params["nonce"], algorithm=algorithm, qop=qop,
        opaque=params.get("opaque"), stale=params.get("stale", "").lower() == "true",
        header="Proxy-Authorization" if proxy else "Authorization",
    )


@dataclass
class DigestCredentials:
    """A user's secret, answering challenges; remembers nonce counts per nonce."""

    username: str
    password: str
    _counts: dict[str, int] = field(default_factory=dict, repr=False)

    def authorize(self, challenge: Challenge, method: str, uri: str, *, cnonce: str | None = None) -> str:
        """The header value answering ``challenge`` for ``method`` on ``uri``."""
        name = challenge.algorithm.upper()
        session = name.endswith("-SESS")
        hash_function = ALGORITHMS[name.removesuffix("-SESS")]

        def h(text: str) -> str:
            return hash_function(text.encode("utf-8")).hexdigest()

        parts = [f'username="{_quote(self.username)}"', f'realm="{_quote(challenge.realm)}"',
                 f'nonce="{_quote(challenge.nonce)}"', f'uri="{_quote(uri)}"']
        ha1 = h(f"{self.username}:{challenge.realm}:{self.password}")
        ha2 = h(f"{method}:{uri}")
        if challenge.qop:
            count = self._counts.get(challenge.nonce, 0) + 1
            self._counts[challenge.nonce] = count
            nc = f"{count:08x}"
            cnonce = cnonce or secrets.token_hex(8)
            if session:
                ha1 = h(f"{ha1}:{challenge.nonce}:{cnonce}")
            response = h(f"{ha1}:{challenge.nonce}:{nc}:{cnonce}:auth:{ha2}")
            parts += [f'response="{response}"', "qop=auth", f"nc={nc}", f'cnonce="{_quote(cnonce)}"']
        else:
            if session:
                raise DigestError(f"{challenge.algorithm} needs qop (RFC 7616 section 3.4.2)")
            parts.append(f'response="{h(f"{ha1}:{challenge.nonce}:{ha2}")}"')
        parts.append(f"algorithm={challenge.algorithm}")
        if challenge.opaque is not None:
            parts.append(f'opaque="{_quote(challenge.opaque)}"')
        return "Digest " + ", ".join(parts)


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
