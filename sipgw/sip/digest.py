"""Digest authentication for SIP (RFC 3261 section 22.4, RFC 7616, RFC 8760): both sides.

Client side: a registrar or proxy answers 401 (WWW-Authenticate) or 407 (Proxy-Authenticate) with a
challenge; ``parse_challenge`` reads it and ``DigestCredentials.authorize`` computes the
Authorization (or Proxy-Authorization) value for the retried request. MD5 and SHA-256
(RFC 8760 adds SHA-256 and SHA-512-256 to SIP), with or without ``-sess``, and with
``qop=auth`` (cnonce and a nonce count that grows per nonce) or no qop (RFC 2069 style,
still what many PBXes send). ``qop=auth-int`` is not offered by Asterisk or Kamailio by
default and is refused with a clear error rather than answered wrongly.

Server side: ``DigestServer`` challenges requests (trivox's registrar and, optionally,
its INVITEs) and checks the answers. Its nonces carry their own time and an HMAC, so no
state is kept per nonce except the last nonce count seen, for replay protection. It
accepts answers with qop=auth and, because small SIP stacks (pyVoIP, old phones) still
answer that way, RFC 2069 answers without qop.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .message import Request

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
    params = {match.group(1).lower(): _unquote(match.group(2)) for match in _PARAM.finditer(rest)}
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
        parts = [f'username="{_quote(self.username)}"', f'realm="{_quote(challenge.realm)}"',
                 f'nonce="{_quote(challenge.nonce)}"', f'uri="{_quote(uri)}"']
        if challenge.qop:
            count = self._counts.get(challenge.nonce, 0) + 1
            self._counts[challenge.nonce] = count
            nc = f"{count:08x}"
            cnonce = cnonce or secrets.token_hex(8)
            response = digest_response(challenge.algorithm, self.username, challenge.realm, self.password,
                                       challenge.nonce, method, uri, (nc, cnonce))
            parts += [f'response="{response}"', "qop=auth", f"nc={nc}", f'cnonce="{_quote(cnonce)}"']
        else:
            response = digest_response(challenge.algorithm, self.username, challenge.realm, self.password,
                                       challenge.nonce, method, uri, None)
            parts.append(f'response="{response}"')
        parts.append(f"algorithm={challenge.algorithm}")
        if challenge.opaque is not None:
            parts.append(f'opaque="{_quote(challenge.opaque)}"')
        return "Digest " + ", ".join(parts)


def digest_response(algorithm: str, username: str, realm: str, password: str, nonce: str, method: str,
                    uri: str, qop_auth: tuple[str, str] | None) -> str:
    """RFC 7616 section 3.4.1 ``response``; ``qop_auth`` is (nc, cnonce) for qop=auth,
    None for an RFC 2069 answer (which cannot use a -sess algorithm)."""
    name = algorithm.upper()
    session = name.endswith("-SESS")
    hash_function = ALGORITHMS[name.removesuffix("-SESS")]

    def h(text: str) -> str:
        return hash_function(text.encode("utf-8")).hexdigest()

    ha1 = h(f"{username}:{realm}:{password}")
    ha2 = h(f"{method}:{uri}")
    if qop_auth is None:
        if session:
            raise DigestError(f"{algorithm} needs qop (RFC 7616 section 3.4.2)")
        return h(f"{ha1}:{nonce}:{ha2}")
    nc, cnonce = qop_auth
    if session:
        ha1 = h(f"{ha1}:{nonce}:{cnonce}")
    return h(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}")


@dataclass(frozen=True)
class Verdict:
    """What ``DigestServer.check`` made of a request's credentials.

    ``username`` is set when they are good. ``stale``: right password, old nonce; the
    client retries with a new one without asking its user (RFC 7616 section 3.3).
    ``reason`` says why they were refused, for the log; it holds no secret.
    """

    username: str | None = None
    stale: bool = False
    reason: str = ""


class DigestServer:
    """Challenges and checks digest credentials for one realm and a set of users."""

    #: nonces whose last count we remember; older ones are simply refused as replays
    MAX_TRACKED = 4096

    def __init__(self, realm: str, users: Mapping[str, str], *, algorithms: Sequence[str] = ("MD5",),
                 nonce_ttl: float = 300.0, secret: bytes | None = None) -> None:
        """``algorithms``: offered in this order, one challenge each (RFC 8760 section 2.4)."""
        unknown = [a for a in algorithms if a.upper().removesuffix("-SESS") not in ALGORITHMS]
        if unknown:
            raise ValueError(f"unknown digest algorithm {unknown[0]!r}")
        self.realm = realm
        self._users = dict(users)
        self._algorithms = tuple(algorithms)
        self._ttl = nonce_ttl
        self._secret = secret or secrets.token_bytes(32)
        self._counts: OrderedDict[str, int] = OrderedDict()

    def challenge(self, now: float, *, stale: bool = False) -> list[str]:
        """Header values for WWW-Authenticate (401) or Proxy-Authenticate (407)."""
        nonce = self._nonce(now)
        extra = ", stale=true" if stale else ""
        return [f'Digest realm="{_quote(self.realm)}", nonce="{nonce}", algorithm={algorithm}, qop="auth"{extra}'
                for algorithm in self._algorithms]

    def check(self, request: Request, now: float, *, header: str = "Authorization") -> Verdict:
        """The credentials in ``request``'s ``header`` for our realm, checked."""
        fields = next((f for f in (_fields(v) for v in request.headers.get_all(header))
                       if f is not None and f.get("realm") == self.realm), None)
        if fields is None:
            return Verdict(reason=f"no {header} for realm {self.realm!r}")
        username = fields.get("username", "")
        password = self._users.get(username)
        if password is None:
            return Verdict(reason=f"unknown user {username!r}")
        algorithm = fields.get("algorithm", "MD5")
        if algorithm.upper() not in {a.upper() for a in self._algorithms}:
            return Verdict(reason=f"algorithm {algorithm!r} was not offered")
        nonce = fields.get("nonce", "")
        age = self._age(nonce, now)
        if age is None:
            return Verdict(reason="a nonce we did not issue")
        qop = fields.get("qop")
        if qop is not None and (qop.lower() != "auth" or "nc" not in fields or "cnonce" not in fields):
            return Verdict(reason=f"qop {qop!r} without nc and cnonce, or not auth")
        try:
            expected = digest_response(algorithm, username, self.realm, password, nonce, request.method,
                                       fields.get("uri", ""), (fields["nc"], fields["cnonce"]) if qop else None)
        except DigestError as exc:
            return Verdict(reason=str(exc))
        if not hmac.compare_digest(expected.encode(), fields.get("response", "").lower().encode()):
            return Verdict(reason=f"wrong password for {username!r}")
        if age > self._ttl:
            return Verdict(stale=True, reason="nonce expired")
        if qop is not None and not self._fresh_count(nonce, fields["nc"]):
            return Verdict(reason="nonce count replayed")
        return Verdict(username=username)

    def _nonce(self, now: float) -> str:
        """Time and a random salt (two phones challenged in the same millisecond must not
        share a nonce, or the second one's nonce count would look replayed), signed."""
        stamp = f"{int(now * 1000):x}.{secrets.token_hex(4)}"
        return f"{stamp}.{self._sign(stamp)}"

    def _age(self, nonce: str, now: float) -> float | None:
        stamp, _, signature = nonce.rpartition(".")
        if not hmac.compare_digest(signature.encode(), self._sign(stamp).encode()):
            return None
        try:
            return now - int(stamp.split(".")[0], 16) / 1000
        except ValueError:
            return None

    def _sign(self, stamp: str) -> str:
        return hmac.new(self._secret, f"{stamp}:{self.realm}".encode(), hashlib.sha256).hexdigest()[:32]

    def _fresh_count(self, nonce: str, nc: str) -> bool:
        """RFC 7616 section 3.4: each use of a nonce must carry a larger count."""
        try:
            count = int(nc, 16)
        except ValueError:
            return False
        if count <= self._counts.get(nonce, 0):
            return False
        self._counts[nonce] = count
        self._counts.move_to_end(nonce)
        while len(self._counts) > self.MAX_TRACKED:
            self._counts.popitem(last=False)
        return True


def _fields(value: str) -> dict[str, str] | None:
    """The parameters of one ``Digest ...`` credentials value; None for another scheme."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        return None
    return {match.group(1).lower(): _unquote(match.group(2)) for match in _PARAM.finditer(rest)}


def _unquote(raw: str) -> str:
    return re.sub(r"\\(.)", r"\1", raw[1:-1]) if raw.startswith('"') else raw


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
