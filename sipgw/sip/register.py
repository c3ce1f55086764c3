"""Registration to a registrar, sans-IO (RFC 3261 section 10.2).

One ``Registration`` keeps one binding alive: our Contact at one account's address of
record. It builds each REGISTER; the user agent sends it in a client transaction and
feeds back the final response or the timeout. Its rules:

1. 2xx: registered for the expiry the registrar granted (the Contact's ``expires`` for
   our binding, else the Expires header, else what we asked), refreshed before it lapses.
2. 401/407: answered once per nonce with digest credentials (``digest.py``); a new
   challenge for the nonce just answered means the credentials are wrong, unless the
   registrar says ``stale=true`` (RFC 7616 section 3.3).
3. 423 Interval Too Brief: asked again with the registrar's Min-Expires (section 10.2.8).
4. Any other failure, or no answer (Timer F): tried again with exponential backoff, so a
   registrar that restarts finds us back soon without being flooded.
5. ``stop``: a REGISTER with Expires: 0 removes the binding (shutdown).
6. Keepalive: while registered, an OPTIONS every ``keepalive`` seconds keeps a NAT
   binding open and notices a registrar that went away (no answer at all: register
   again, with the backoff of rule 4). Any answer, even 404, proves it is there.
7. NAT (RFC 3581): the registrar writes where our REGISTER came from into Via
   ``received``/``rport``. When that differs from our Contact, the Contact is moved to
   the address the registrar sees (the old one removed in the same REGISTER), so calls
   from it reach us through the NAT. ``AddressLearned`` tells the user agent, which
   then advertises that address to this peer. Off when the operator set an address.

Call-ID and From tag stay the same for the life of the registration, and CSeq grows by
one for each REGISTER (section 10.2.4).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from .digest import Challenge, DigestCredentials, DigestError, parse_challenge
from .message import (
    CSeq,
    Headers,
    NameAddr,
    Request,
    Response,
    SipError,
    new_branch,
    new_call_id,
    new_tag,
    parse_name_addr,
    parse_via,
)
from .transaction import earliest

#: Refresh this long before the binding lapses, or at half its life if that is sooner.
REFRESH_MARGIN = 60.0
RETRY_FIRST = 5.0
RETRY_MAX = 300.0


class RegistrationState(enum.Enum):
    IDLE = "idle"
    REGISTERING = "registering"
    REGISTERED = "registered"
    RETRYING = "retrying"
    UNREGISTERING = "unregistering"
    STOPPED = "stopped"


@dataclass(frozen=True)
class Account:
    """Where and as whom to register."""

    registrar: tuple[str, int]  # address to send to (the adapter resolved any name)
    aor: str  # address of record, "sip:user@domain"
    username: str
    password: str
    expires: int = 300

    @property
    def registrar_uri(self) -> str:
        """Request-URI of a REGISTER: the AOR's domain (section 10.2)."""
        host = self.aor.split("@", 1)[-1].split(";", 1)[0]
        return f"sip:{host}"


@dataclass(frozen=True)
class Registered:
    aor: str
    expires: int


@dataclass(frozen=True)
class RegistrationFailed:
    aor: str
    reason: str
    retry_in: float


@dataclass(frozen=True)
class Unregistered:
    aor: str


@dataclass(frozen=True)
class AddressLearned:
    """The registrar sees us at ``host``:``port`` (behind a NAT, say): advertise that to it."""

    aor: str
    registrar: tuple[str, int]
    host: str
    port: int


RegistrationEvent = Registered | RegistrationFailed | Unregistered | AddressLearned


class Registration:
    def __init__(self, account: Account, *, contact: str, via_host: str, via_port: int,
                 user_agent: str = "trivox", keepalive: float = 0.0, learn_address: bool = True) -> None:
        """``keepalive``: seconds between OPTIONS probes while registered (0: none)."""
        self.account = account
        self.contact = contact  # "<sip:user@host:port>"
        self.state = RegistrationState.IDLE
        self.events: list[RegistrationEvent] = []
        self._refresh_at: float | None = None  # the next REGISTER (refresh or retry)
        self._probe_at: float | None = None  # the next OPTIONS
        self._keepalive = keepalive
        self._learn_address = learn_address
        self._moved_from: str | None = None  # our old Contact, removed by the next REGISTER
        self._via_host = via_host
        self._via = f"SIP/2.0/UDP {via_host}:{via_port}"
        self._user_agent = user_agent
        self._call_id = new_call_id(via_host)
        self._tag = new_tag()
        self._cseq = 0
        self._expires = account.expires
        self._credentials = DigestCredentials(account.username, account.password)
        self._challenge: Challenge | None = None  # the last one: answered again on each REGISTER
        self._answered_nonces: set[str] = set()
        self._retry_delay = RETRY_FIRST

    # --- driving it ---------------------------------------------------------------------

    @property
    def deadline(self) -> float | None:
        return earliest(self._refresh_at, self._probe_at)

    def start(self, now: float) -> Request:
        self.state = RegistrationState.REGISTERING
        self._refresh_at = self._probe_at = None
        return self._register(self._expires)

    def stop(self, now: float) -> Request | None:
        """Remove the binding; None when there is none to remove."""
        if self.state in (RegistrationState.IDLE, RegistrationState.STOPPED):
            return None
        self.state = RegistrationState.UNREGISTERING
        self._refresh_at = self._probe_at = None
        return self._register(0)

    def on_timer(self, now: float) -> Request | None:
        """The REGISTER or OPTIONS that is due now, if any."""
        if self._refresh_at is not None and now >= self._refresh_at:
            return self.start(now)
        if self._probe_at is not None and now >= self._probe_at:
            self._probe_at = None  # set again when the answer comes
            return self._options()
        return None

    def on_probe_answer(self, response: Response | None, now: float) -> None:
        """The answer to our OPTIONS, or None when none came (Timer F)."""
        if self.state is not RegistrationState.REGISTERED:
            return
        if response is None:
            self._failed("the registrar stopped answering OPTIONS", now)
            self._refresh_at = now  # register again at once; the backoff starts from there
        else:
            self._probe_at = now + self._keepalive

    def on_response(self, response: Response, now: float) -> Request | None:
        """The final response to our last REGISTER; returns the next REGISTER to send now."""
        status = response.status
        if status in (401, 407):
            return self._challenged(response, now)
        if self.state is RegistrationState.UNREGISTERING:
            self.state = RegistrationState.STOPPED
            self.events.append(Unregistered(self.account.aor))
            return None
        if 200 <= status < 300:
            self._registered(response, now)
            return self._follow_nat(response)
        if status == 423:
            minimum = _int(response.headers.get("Min-Expires"))
            if minimum is not None and minimum > self._expires:
                self._expires = minimum
                return self._register(self._expires)
        self._failed(f"{status} {response.reason}", now)
        return None

    def on_timeout(self, now: float) -> None:
        """No final response (Timer F): the registrar is gone, for now."""
        if self.state is RegistrationState.UNREGISTERING:
            self.state = RegistrationState.STOPPED
            return
        self._failed("no response from the registrar", now)

    # --- steps --------------------------------------------------------------------------

    def _registered(self, response: Response, now: float) -> None:
        granted = self._granted(response)
        self.state = RegistrationState.REGISTERED
        self._retry_delay = RETRY_FIRST
        self._answered_nonces.clear()
        self._moved_from = None
        self._refresh_at = now + max(granted / 2, granted - REFRESH_MARGIN)
        self._probe_at = now + self._keepalive if self._keepalive > 0 else None
        self.events.append(Registered(self.account.aor, granted))

    def _follow_nat(self, response: Response) -> Request | None:
        """Rule 7: move our Contact to where the registrar saw the REGISTER come from."""
        if not self._learn_address:
            return None
        try:
            via = parse_via(response.headers.get("Via") or "")
        except SipError:
            return None
        received = via.params.get("received")
        rport = via.params.get("rport")
        if not received or not rport or not rport.isdigit():
            return None
        contact = parse_name_addr(self.contact)
        user = contact.uri.split(":", 1)[1].split("@", 1)[0]
        host = f"[{received}]" if ":" in received else received
        seen = f"sip:{user}@{host}:{rport}"
        if seen == contact.uri:
            return None
        self._moved_from, self.contact = self.contact, f"<{seen}>"
        self.events.append(AddressLearned(self.account.aor, self.account.registrar, received, int(rport)))
        self.state = RegistrationState.REGISTERING
        self._refresh_at = self._probe_at = None
        return self._register(self._expires)

    def _challenged(self, response: Response, now: float) -> Request | None:
        proxy = response.status == 407
        values = response.headers.get_all("Proxy-Authenticate" if proxy else "WWW-Authenticate")
        try:
            challenge = next(parse_challenge(v, proxy=proxy) for v in values if v.lower().startswith("digest"))
        except (StopIteration, DigestError) as exc:
            self._failed(f"{response.status}: {exc or 'no digest challenge'}", now)
            return None
        if challenge.nonce in self._answered_nonces and not challenge.stale:
            if self.state is RegistrationState.UNREGISTERING:
                self.state = RegistrationState.STOPPED
                return None
            self._failed(f"{response.status}: credentials for {self.account.username!r} were refused", now)
            return None
        self._answered_nonces.add(challenge.nonce)
        self._challenge = challenge
        return self._register(0 if self.state is RegistrationState.UNREGISTERING else self._expires)

    def _failed(self, reason: str, now: float) -> None:
        self.state = RegistrationState.RETRYING
        self._challenge = None
        self._probe_at = None
        self._refresh_at = now + self._retry_delay
        self.events.append(RegistrationFailed(self.account.aor, reason, self._retry_delay))
        self._retry_delay = min(self._retry_delay * 2, RETRY_MAX)

    def _granted(self, response: Response) -> int:
        ours = parse_name_addr(self.contact).uri
        for value in response.headers.get_all("Contact"):
            try:
                binding = parse_name_addr(value)
            except SipError:
                continue
            if binding.uri == ours and _int(binding.params.get("expires")) is not None:
                return _int(binding.params.get("expires")) or 0
        header = _int(response.headers.get("Expires"))
        return header if header is not None else self._expires

    def _register(self, expires: int) -> Request:
        self._cseq += 1
        headers = Headers()
        headers.add("Via", f"{self._via};branch={new_branch()};rport")
        headers.add("Max-Forwards", "70")
        headers.add("From", str(NameAddr(None, self.account.aor, {"tag": self._tag})))
        headers.add("To", str(NameAddr(None, self.account.aor, {})))
        headers.add("Call-ID", self._call_id)
        headers.add("CSeq", str(CSeq(self._cseq, "REGISTER")))
        headers.add("Contact", self.contact)
        if self._moved_from is not None and expires:
            headers.add("Contact", f"{self._moved_from};expires=0")
        headers.add("Expires", str(expires))
        if self._challenge is not None:
            # Answering the registrar's last challenge again, with the next nonce count,
            # saves a 401 round trip on every refresh (RFC 7616 section 3.4).
            credentials = self._credentials.authorize(self._challenge, "REGISTER", self.account.registrar_uri)
            headers.add(self._challenge.header, credentials)
        headers.add("User-Agent", self._user_agent)
        return Request("REGISTER", self.account.registrar_uri, headers)


    def _options(self) -> Request:
        """An out-of-dialog OPTIONS to the registrar (RFC 3261 section 11), our keepalive."""
        headers = Headers()
        headers.add("Via", f"{self._via};branch={new_branch()};rport")
        headers.add("Max-Forwards", "70")
        headers.add("From", str(NameAddr(None, self.account.aor, {"tag": new_tag()})))
        headers.add("To", str(NameAddr(None, self.account.registrar_uri, {})))
        headers.add("Call-ID", new_call_id(self._via_host))
        headers.add("CSeq", str(CSeq(1, "OPTIONS")))
        headers.add("Accept", "application/sdp")
        headers.add("User-Agent", self._user_agent)
        return Request("OPTIONS", self.account.registrar_uri, headers)


def _int(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    return min(int(value), 2**31)  # RFC 4475 scalar02: overlarge values are clamped
