"""A small registrar, sans-IO (RFC 3261 section 10.3), for standalone mode.

Softphones such as Zoiper, Linphone and pyVoIP insist on registering before they place a
call. trivox never calls them, so their bindings are only kept, listed and expired: it is
what lets those phones come up and dial trivox directly. The user agent checks the
credentials (``digest.DigestServer``) first and hands this class the REGISTER and the
user it proved to be.

The rules, numbered as in section 10.3:
5. the To user must be the authenticated user (else 403);
6. ``Contact: *`` with ``Expires: 0`` removes every binding; ``*`` otherwise is a 400;
7. each contact's expiry is its ``expires`` parameter, else the Expires header, else our
   default; below our minimum (and not 0) it is a 423 with Min-Expires, above our maximum
   it is cut to the maximum, and 0 removes that contact. A REGISTER with the Call-ID of a
   binding and a CSeq not above the one stored is out of order: 500, nothing changes;
8. the 200 lists every binding the user now has, each with the seconds it has left;
   a REGISTER without Contact is just that query.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .message import NameAddr, Request, SipError, parse_cseq, parse_name_addr

Address = tuple[str, int]
Reply = tuple[int, list[tuple[str, str]]]


@dataclass
class Binding:
    """One contact of one user, and where its REGISTER came from (for the log and NAT)."""

    uri: str
    source: Address
    expires_at: float
    call_id: str
    cseq: int


class Registrar:
    def __init__(self, *, min_expires: int = 60, max_expires: int = 3600, default_expires: int = 3600) -> None:
        self.min_expires = min_expires
        self.max_expires = max_expires
        self.default_expires = default_expires
        self._bindings: dict[str, list[Binding]] = {}

    @property
    def deadline(self) -> float | None:
        """When the next binding lapses; the user agent calls ``expire`` then."""
        times = [b.expires_at for bindings in self._bindings.values() for b in bindings]
        return min(times) if times else None

    def expire(self, now: float) -> None:
        for user in list(self._bindings):
            live = [b for b in self._bindings[user] if b.expires_at > now]
            if live:
                self._bindings[user] = live
            else:
                del self._bindings[user]

    def bindings(self, user: str, now: float) -> list[Binding]:
        return [b for b in self._bindings.get(user, []) if b.expires_at > now]

    def register(self, request: Request, user: str, source: Address, now: float) -> Reply:
        """The status and extra headers answering ``request`` from the proved ``user``."""
        try:
            to_user = _user_of(parse_name_addr(request.headers.get("To") or ""))
            cseq = parse_cseq(request.headers.get("CSeq") or "").number
            contacts = request.headers.get_all("Contact")
            wildcard = [c for c in contacts if c.strip() == "*"]
            parsed = [parse_name_addr(c) for c in contacts if c.strip() != "*"]
        except SipError:
            return 400, []
        if to_user != user:
            return 403, []
        call_id = request.headers.get("Call-ID") or ""
        header_expires = _seconds(request.headers.get("Expires"))
        self.expire(now)
        current = self._bindings.get(user, [])
        if any(b.call_id == call_id and cseq <= b.cseq for b in current):
            return 500, [("Retry-After", "1")]  # step 7: an old or repeated REGISTER
        if wildcard:
            if parsed or len(wildcard) > 1 or header_expires != 0:
                return 400, []
            self._bindings.pop(user, None)
            return 200, []
        changes: list[tuple[str, int]] = []
        for contact in parsed:
            asked = _seconds(contact.params.get("expires"))
            expires = asked if asked is not None else header_expires
            expires = self.default_expires if expires is None else expires
            if 0 < expires < self.min_expires:
                return 423, [("Min-Expires", str(self.min_expires))]
            changes.append((contact.uri, min(expires, self.max_expires)))
        for uri, expires in changes:
            current = [b for b in current if b.uri != uri]
            if expires:
                current.append(Binding(uri, source, now + expires, call_id, cseq))
        if current:
            self._bindings[user] = current
        else:
            self._bindings.pop(user, None)
        return 200, [("Contact", f"<{b.uri}>;expires={math.ceil(b.expires_at - now)}") for b in current]


def _user_of(address: NameAddr) -> str:
    rest = address.uri.split(":", 1)[-1]
    return rest.split("@", 1)[0] if "@" in rest else ""


def _seconds(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    return min(int(value), 2**31)
