"""The SIP user agent core, sans-IO: trivox as a UAS that answers calls.

``UserAgent`` takes datagrams with their source address and the current time, and hands
back datagrams to send (``outgoing``) and call events (``events``). It owns the
transactions (``transaction.py``) and one ``Session`` per INVITE dialog. It never
resolves a host name: responses go to the request's source address (RFC 3261 section
18.2.2 with RFC 3581 rport), and requests inside a dialog go back along the flow the
INVITE arrived on, which is also what gets through a NAT.

What the core answers on its own (RFC 3261 section 8.2):
- a request that parses but is invalid: 400 naming the problem (or 505 for the version);
- a Request-URI scheme other than sip/sips: 416 (section 8.2.2.1);
- a Require with an extension we lack: 420 with Unsupported (section 8.2.2.3);
- OPTIONS: 200 with Allow, Accept and Supported (section 11.2);
- UPDATE (RFC 3311): a session refresh is answered here; an offer goes to the TU like a
  re-INVITE's; an offer that crosses one of ours gets 491;
- a Session-Expires below our Min-SE: 422 (RFC 4028; ``session_timer.py``).
- REGISTER: with users configured (standalone mode), digest-checked and kept by the
  registrar (``registrar.py``); without, 405 like other known methods we do not serve
  (SUBSCRIBE, ...), with Allow;
- a new INVITE, when ``challenge_invites`` is set: 401 until its credentials check out;
- unknown methods: 501 (section 8.2.1);
- BYE or CANCEL for nothing we know: 481.
INVITE gets 100 Trying at once; the TU (the server) then answers or rejects the call.

Session timers (RFC 4028) run here too: when trivox refreshes, it sends UPDATE if the
peer allows it, else a re-INVITE with our current SDP (the one INVITE we ever send);
when the peer refreshes and does not, trivox ends the call with BYE.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from .message import (
    BadRequest,
    CSeq,
    Headers,
    NameAddr,
    ParseError,
    Request,
    Response,
    StreamParser,
    make_response,
    new_branch,
    parse_cseq,
    parse_message,
    parse_name_addr,
    parse_via,
    validate_request,
)
from .digest import DigestServer
from .register import Account, AddressLearned, Registration, RegistrationEvent
from .registrar import Registrar
from .session_timer import IntervalTooSmall, SessionTimer, from_response, min_se_of, negotiate, supports_timer
from .transaction import (
    TIMEOUT,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    Retransmission,
    State,
    earliest,
)

log = logging.getLogger("trivox.sip")

Address = tuple[str, int]
#: What a client transaction does with its final response (None: Timer F fired).
OnFinal = Callable[[Response | None, float], None]
ClientTransaction = InviteClientTransaction | NonInviteClientTransaction
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: Methods we serve; OPTIONS and BYE/CANCEL/ACK complete the INVITE dialog's needs.
ALLOWED = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "NOTIFY", "INFO", "UPDATE")
#: Methods RFC 3261 and its common extensions define but we do not serve: 405, not 501.
KNOWN_UNSERVED = ("REGISTER", "SUBSCRIBE", "PUBLISH", "MESSAGE", "REFER", "PRACK")
SUPPORTED: tuple[str, ...] = ("timer",)
#: RFC 3261 section 14.1: the side that did not make the Call-ID waits 0 to 2 s after a 491.
GLARE_WAIT = 2.0
SIP_SCHEMES = ("sip", "sips")
DTMF_TYPES = ("application/dtmf-relay", "application/dtmf")
DTMF_DIGITS = frozenset("0123456789*#ABCD")


# --- events handed to the TU ------------------------------------------------------------


@dataclass(frozen=True)
class IncomingCall:
    """A new INVITE; the TU must call ``answer`` or ``reject`` with this key."""

    key: str
    request: Request
    source: Address


@dataclass(frozen=True)
class Reinvite:
    """A new offer inside the call (hold, resume, session refresh, codec change), by
    re-INVITE or by UPDATE with SDP (``request.method`` tells).

    The TU must call ``answer`` (with the SDP answer, or our current SDP when the
    re-INVITE carried no offer) or ``reject`` with this key; the call goes on either way.
    """

    key: str
    request: Request


@dataclass(frozen=True)
class TransferProgress:
    """How our REFER is going (RFC 3515): the REFER's own answer, then the transferee's
    NOTIFY reports. ``status`` is a SIP status code; ``final`` when nothing more will come."""

    key: str
    status: int
    final: bool


@dataclass(frozen=True)
class Digit:
    """A DTMF digit the caller sent in a SIP INFO (application/dtmf-relay or application/dtmf)."""

    key: str
    digit: str


@dataclass(frozen=True)
class CallConfirmed:
    """The ACK for our 2xx arrived: the dialog is confirmed.

    ``sdp`` is the ACK's body: the caller's answer when its INVITE had no offer and our
    2xx made one (RFC 3261 section 13.2.1, delayed offer).
    """

    key: str
    sdp: bytes = b""


@dataclass(frozen=True)
class CallEnded:
    """The call is over from the signalling side; ``reason`` is for logs and transcripts."""

    key: str
    reason: str


Event = IncomingCall | Reinvite | TransferProgress | Digit | CallConfirmed | CallEnded | RegistrationEvent


# --- the dialog state we keep per call --------------------------------------------------


@dataclass
class Session:
    """An INVITE dialog where we are the UAS (RFC 3261 section 12.1.1)."""

    key: str
    invite: Request
    source: Address
    transaction: InviteServerTransaction
    local_tag: str
    remote: NameAddr  # the caller's From, with its tag
    local: NameAddr  # the INVITE's To, with our tag once we answer
    call_id: str
    remote_target: str
    route_set: list[str]
    local_cseq: int = field(default_factory=lambda: secrets.randbelow(2**16) + 1)
    confirmed: bool = False
    ended: bool = False
    #: ``invite`` and ``transaction`` are a re-INVITE awaiting the TU's answer.
    reinvite: bool = False
    #: methods the peer's Allow listed: a refresh by UPDATE needs it there
    peer_allow: frozenset[str] = frozenset()
    # the 2xx the UA core retransmits until the ACK (section 13.3.1.4)
    ok_datagram: bytes | None = None
    ok_retransmit: Retransmission | None = None
    ok_give_up_at: float | None = None
    #: our current session description; a refresh by re-INVITE offers it again
    local_sdp: bytes = b""
    #: an UPDATE with an offer awaiting the TU's answer (RFC 3311), and its transaction
    update: tuple[Request, NonInviteServerTransaction] | None = None
    # RFC 4028: the timer the pending 2xx will set, the running one, and what happens at
    # ``timer_at``: our refresh, or the BYE when the peer's refresh did not come
    pending_timer: SessionTimer | None = None
    timer: SessionTimer | None = None
    timer_at: float | None = None
    #: our refresh in flight (a re-INVITE here is what makes glare possible)
    refreshing: InviteClientTransaction | NonInviteClientTransaction | None = None
    #: the ACK for the 2xx to our re-INVITE, resent when that 2xx is
    refresh_ack: bytes | None = None
    #: when the next in-dialog OPTIONS goes out (keepalive)
    probe_at: float | None = None

    @property
    def deadline(self) -> float | None:
        return earliest(self.ok_retransmit.next_at if self.ok_retransmit else None, self.ok_give_up_at,
                        self.timer_at, self.probe_at)


class UserAgent:
    """The sans-IO SIP endpoint. Feed it with ``receive`` and ``handle_timers``."""

    def __init__(self, *, port: int, host_for: Callable[[str], str], user_agent: str = "trivox",
                 trusted: Sequence[IPNetwork] = (), keepalive: float = 0.0, learn_address: bool = False,
                 tls_port: int | None = None, auth: DigestServer | None = None,
                 registrar: Registrar | None = None, challenge_invites: bool = False) -> None:
        """``host_for(peer_ip)`` gives the address we advertise to that peer (Via, Contact).

        ``trusted``: when given, only these source networks may start calls (trunk mode);
        a new INVITE from anywhere else gets 403.
        ``keepalive``: seconds between OPTIONS to each registrar and inside each call (0: none).
        ``learn_address``: advertise to a registrar the address it sees us at (RFC 3581).
        ``port`` is ours for UDP and TCP; ``tls_port`` for TLS, when we listen for it.
        ``auth`` checks credentials for ``registrar`` (REGISTER) and, with
        ``challenge_invites``, for every new INVITE (standalone mode).
        """
        if (registrar is not None or challenge_invites) and auth is None:
            raise ValueError("a registrar or INVITE challenges need an authenticator")
        self.auth = auth
        self.registrar = registrar
        self.challenge_invites = challenge_invites
        self.port = port
        self.tls_port = tls_port
        self.host_for = host_for
        self.trusted = tuple(trusted)
        self.user_agent = user_agent
        self.keepalive = keepalive
        self.learn_address = learn_address
        #: peer IP -> (host, port) that peer sees us at, learned from its Via received/rport
        self._public: dict[str, tuple[str, int]] = {}
        #: peers we have a stream connection with, and its transport ("tcp", "tls")
        self._flows: dict[Address, str] = {}
        self._out: list[tuple[bytes, Address]] = []
        self._events: list[Event] = []
        self._server_tx: dict[tuple[str, ...], InviteServerTransaction | NonInviteServerTransaction] = {}
        self._tx_dest: dict[int, Address] = {}
        # branch -> (transaction, destination, what to do with its final response or
        # None when Timer F or B fired)
        self._client_tx: dict[str, tuple[ClientTransaction, Address, OnFinal]] = {}
        self._sessions: dict[str, Session] = {}
        self._registrations: list[Registration] = []

    # --- output ------------------------------------------------------------------------

    def outgoing(self) -> list[tuple[bytes, Address]]:
        """Datagrams to send, in order, each with its destination. Drains the queue."""
        out, self._out = self._out, []
        return out

    def events(self) -> list[Event]:
        """Events for the TU since the last call. Drains the queue."""
        events, self._events = self._events, []
        return events

    def next_deadline(self) -> float | None:
        return earliest(*(tx.deadline for tx in self._server_tx.values()),
                        *(tx.deadline for tx, _, _ in self._client_tx.values()),
                        *(s.deadline for s in self._sessions.values()),
                        *(r.deadline for r in self._registrations),
                        self.registrar.deadline if self.registrar else None)

    def contact(self, peer_ip: str, transport: str = "udp") -> str:
        own_port = self.tls_port if transport == "tls" and self.tls_port else self.port
        host, port = self._public.get(peer_ip, (self.host_for(peer_ip), own_port))
        parameter = "" if transport == "udp" else f";transport={transport}"
        return f"<sip:trivox@{_host_literal(host)}:{port}{parameter}>"

    def transport_to(self, dest: Address) -> str:
        """How messages to ``dest`` travel: over its connection when there is one, else UDP."""
        return self._flows.get(dest, "udp")

    def public_host(self, peer_ip: str) -> str | None:
        """The address ``peer_ip`` sees us at, if its registrar told us (for SDP behind NAT)."""
        learned = self._public.get(peer_ip)
        return learned[0] if learned else None

    # --- input -------------------------------------------------------------------------

    def receive(self, data: bytes, source: Address, now: float) -> None:
        """One datagram from ``source``. Garbage is dropped with a log line."""
        try:
            message = parse_message(data)
        except ParseError as exc:
            log.warning("dropped unparseable datagram from %s:%d: %s", *source, exc)
            return
        except BadRequest as exc:
            # A broken request (framing, start line): answered from what did parse.
            if exc.request is not None:
                self._stateless_error(exc.request, source, exc.status, exc.reason)
            return
        self._dispatch(message, source, now)

    def receive_stream(self, parser: StreamParser, source: Address, now: float, transport: str) -> bool:
        """Every complete message ``parser`` holds from the connection with ``source``.

        ``transport`` is "tcp" or "tls": responses and in-dialog requests for this peer go
        back on that connection, and its transactions do not retransmit. Returns False when
        the stream's framing broke (RFC 3261 section 18.3): the adapter closes it.
        """
        self._flows[source] = transport
        while True:
            try:
                message = parser.next_message()
            except BadRequest as exc:
                if exc.request is not None:
                    self._stateless_error(exc.request, source, exc.status, exc.reason)
                continue
            except ParseError as exc:
                log.warning("closing the %s connection from %s:%d: %s", transport, *source, exc)
                return False
            if message is None:
                return True
            self._dispatch(message, source, now)

    def flow_closed(self, source: Address) -> None:
        """The connection with ``source`` is gone; what we send there next goes by UDP."""
        self._flows.pop(source, None)

    def _dispatch(self, message: Request | Response, source: Address, now: float) -> None:
        if isinstance(message, Response):
            self._on_response(message, source, now)
        else:
            self._on_request(message, source, now)

    def handle_timers(self, now: float) -> None:
        for key, tx in list(self._server_tx.items()):
            if tx.deadline is not None and now >= tx.deadline:
                datagram = tx.on_timer(now)
                if datagram is not None:
                    self._out.append((datagram, self._tx_dest[id(tx)]))
            if tx.state is State.TERMINATED:
                del self._server_tx[key]
                self._tx_dest.pop(id(tx), None)
                if isinstance(tx, InviteServerTransaction) and tx.timed_out:
                    self._end_by_transaction(tx, "no ACK for the final response (Timer H)")
        for branch, (ctx, dest, on_final) in list(self._client_tx.items()):
            if ctx.deadline is not None and now >= ctx.deadline:
                datagram = ctx.on_timer(now)
                if datagram is not None:
                    self._out.append((datagram, dest))
            if ctx.state is State.TERMINATED:
                del self._client_tx[branch]
                if ctx.timed_out:
                    log.warning("%s to %s:%d timed out", ctx.request.method, *dest)
                    on_final(None, now)
        for session in list(self._sessions.values()):
            self._session_timers(session, now)
        for registration in self._registrations:
            self._send_register(registration, registration.on_timer(now), now)
        if self.registrar is not None:
            self.registrar.expire(now)

    # --- commands from the TU ------------------------------------------------------------

    def register(self, account: Account, now: float) -> None:
        """Keep a binding at ``account``'s registrar from now until ``unregister_all``."""
        host = _host_literal(self.host_for(account.registrar[0]))
        user = parse_name_addr(f"<{account.aor}>").uri.split(":", 1)[1].split("@", 1)[0]
        registration = Registration(account, contact=f"<sip:{user}@{host}:{self.port}>", via_host=host,
                                    via_port=self.port, user_agent=self.user_agent, keepalive=self.keepalive,
                                    learn_address=self.learn_address)
        self._registrations.append(registration)
        self._send_register(registration, registration.start(now), now)

    def unregister_all(self, now: float) -> None:
        """Expires: 0 for every binding (shutdown)."""
        for registration in self._registrations:
            self._send_register(registration, registration.stop(now), now)

    @property
    def registrations(self) -> list[Registration]:
        return list(self._registrations)

    def refer(self, key: str, target: str, now: float) -> None:
        """Blind transfer (RFC 3515): ask the caller's side to call ``target`` instead.

        Progress comes back as ``TransferProgress`` events: the REFER's answer (202, or a
        failure), then the sipfrag status lines of the transferee's NOTIFYs.
        """
        session = self._sessions[key]

        def answered(response: Response | None, now: float) -> None:
            status = 408 if response is None else response.status
            if status >= 300:
                self._events.append(TransferProgress(key, status, final=True))
            else:
                self._events.append(TransferProgress(key, status, final=False))

        referred_by = f"<{parse_name_addr(str(session.local)).uri}>"
        self._in_dialog(session, "REFER", now, answered,
                        headers=[("Refer-To", f"<{target}>"), ("Referred-By", referred_by),
                                 ("Contact", self._session_contact(session))])

    def active(self, key: str) -> bool:
        """The call ``key`` exists and has not ended (a CANCEL may have come meanwhile)."""
        session = self._sessions.get(key)
        return session is not None and not session.ended

    def answer(self, key: str, sdp: bytes, now: float) -> None:
        """Accept the call (or its re-INVITE or UPDATE offer) with ``sdp``.

        The 2xx to an INVITE is resent until the ACK; any session timer the request
        negotiated starts now.
        """
        session = self._sessions[key]
        headers = [("Contact", self._session_contact(session)), ("Allow", ", ".join(ALLOWED)),
                   ("Supported", ", ".join(SUPPORTED)), ("Content-Type", "application/sdp")]
        if session.update is not None:
            request, tx = session.update
            session.update = None
            response = make_response(request, 200, headers=[
                *headers, *self._timer_headers(session, request), ("Server", self.user_agent)], body=sdp)
            self._out.append((tx.respond(response, now), self._tx_dest[id(tx)]))
        else:
            if session.transaction.state is not State.PROCEEDING:
                raise RuntimeError(f"call {key} can no longer be answered")
            datagram = self._respond_invite(
                session, 200, now, headers=[*headers, *self._timer_headers(session, session.invite)], body=sdp)
            session.ok_datagram = datagram
            session.ok_retransmit = Retransmission(datagram, now)
            session.ok_give_up_at = now + TIMEOUT
            session.reinvite = False
        session.local_sdp = sdp
        self._start_timer(session, session.pending_timer, now)

    def reject(self, key: str, status: int, now: float, reason: str | None = None) -> None:
        """Refuse the call, or only its re-INVITE (the call then goes on unchanged)."""
        session = self._sessions.get(key)
        if session is not None and session.update is not None:
            request, tx = session.update
            session.update = None
            response = make_response(request, status, reason, headers=[("Server", self.user_agent)])
            self._out.append((tx.respond(response, now), self._tx_dest[id(tx)]))
            return
        if session is None or session.transaction.state is not State.PROCEEDING:
            return
        self._respond_invite(session, status, now, reason=reason)
        if session.reinvite:
            session.reinvite = False
        else:
            self._sessions.pop(key, None)

    def hangup(self, key: str, now: float) -> None:
        """End the call from our side: BYE when confirmed, 480 before the answer.

        An answered call whose ACK has not arrived yet also gets a BYE: RFC 3261 section
        15 lets the callee send BYE after the 2xx, and waiting for the ACK would keep the
        caller on a dead line.
        """
        session = self._sessions.get(key)
        if session is None or session.ended:
            return
        if session.ok_datagram is None:
            self.reject(key, 480, now, reason="Temporarily Unavailable")
            return
        self._send_bye(session, now)

    # --- requests ----------------------------------------------------------------------

    def _on_request(self, request: Request, source: Address, now: float) -> None:
        try:
            validate_request(request)
            via = parse_via(request.headers.get("Via") or "")
        except BadRequest as exc:
            self._stateless_error(request, source, exc.status, exc.reason)
            return
        dest = self._stamp_via(request, via, source)
        key = self._tx_key(request, via.branch or "", via)
        existing = self._server_tx.get(key)
        if request.method == "ACK":
            self._on_ack(request, existing, now)
            return
        if existing is not None:
            datagram = existing.on_retransmission()
            if datagram is not None:
                self._out.append((datagram, dest))
            return
        scheme = request.uri.split(":", 1)[0].lower()
        if scheme not in SIP_SCHEMES:
            self._reply(request, dest, 416, now, key)
            return
        unsupported = [tag for tag in request.headers.get_all("Require") if tag not in SUPPORTED]
        if unsupported and request.method not in ("CANCEL", "ACK"):
            self._reply(request, dest, 420, now, key, headers=[("Unsupported", ", ".join(unsupported))])
            return
        if request.method == "INVITE":
            self._on_invite(request, source, dest, key, now)
        elif request.method == "CANCEL":
            self._on_cancel(request, dest, key, now)
        elif request.method == "BYE":
            self._on_bye(request, dest, key, now)
        elif request.method == "NOTIFY":
            self._on_notify(request, dest, key, now)
        elif request.method == "INFO":
            self._on_info(request, dest, key, now)
        elif request.method == "UPDATE":
            self._on_update(request, dest, key, now)
        elif request.method == "REGISTER" and self.registrar is not None:
            self._on_register(request, source, dest, key, now)
        elif request.method == "OPTIONS":
            self._reply(request, dest, 200, now, key, headers=[
                ("Allow", ", ".join(ALLOWED)), ("Accept", "application/sdp"),
                ("Supported", ", ".join(SUPPORTED)), ("Contact", self.contact(source[0], self.transport_to(source)))])
        elif request.method in KNOWN_UNSERVED:
            self._reply(request, dest, 405, now, key, headers=[("Allow", ", ".join(ALLOWED))])
        else:
            self._reply(request, dest, 501, now, key, headers=[("Allow", ", ".join(ALLOWED))])

    def _on_invite(self, request: Request, source: Address, dest: Address, key: tuple[str, ...],
                   now: float) -> None:
        to = parse_name_addr(request.headers.get("To") or "")
        if to.tag is not None:
            self._on_reinvite(request, dest, key, now)
            return
        if self.trusted and not _inside(source[0], self.trusted):
            log.warning("refused a call from %s: not in sip.trusted_networks", source[0])
            self._reply(request, dest, 403, now, key)
            return
        if self.challenge_invites and not self._authenticated(request, dest, key, now):
            return
        agreed, timer = self._negotiate_timer(request, dest, key, now)
        if not agreed:
            return
        content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        # No body is a delayed offer (RFC 3261 section 13.2.1): the TU offers in its 2xx.
        if request.body and content_type != "application/sdp":
            self._reply(request, dest, 415, now, key, headers=[("Accept", "application/sdp")])
            return
        accept = [value.split(";")[0].strip().lower() for value in request.headers.get_all("Accept")]
        if accept and not {"application/sdp", "application/*", "*/*"} & set(accept):
            # RFC 3261 section 21.4.7; RFC 4475 sdp01: our answer would be SDP.
            self._reply(request, dest, 406, now, key,
                        headers=[("Warning", '399 trivox "only application/sdp bodies are sent"')])
            return
        transaction = InviteServerTransaction(request, now, self._reliable(dest))
        self._server_tx[key] = transaction
        self._tx_dest[id(transaction)] = dest
        remote = parse_name_addr(request.headers.get("From") or "")
        contact = request.headers.get_all("Contact")
        session = Session(
            key=_session_key(request.headers.get("Call-ID") or "", remote.tag or ""),
            invite=request,
            source=source,
            transaction=transaction,
            local_tag=_new_tag(),
            remote=remote,
            local=to,
            call_id=request.headers.get("Call-ID") or "",
            remote_target=parse_name_addr(contact[0]).uri if contact else remote.uri,
            route_set=request.headers.get_all("Record-Route"),
            peer_allow=_allowed(request),
            pending_timer=timer,
        )
        self._sessions[session.key] = session
        self._respond_invite(session, 100, now)
        self._events.append(IncomingCall(session.key, request, source))

    def _on_reinvite(self, request: Request, dest: Address, key: tuple[str, ...], now: float) -> None:
        """RFC 3261 section 14.2: a new offer in the dialog; the TU answers it."""
        session = self._find_session(request)
        if session is None or session.ended:
            self._reply(request, dest, 481, now, key)
            return
        if session.reinvite or session.update is not None or session.ok_retransmit is not None:
            # An earlier INVITE is not finished yet: 500 with Retry-After (section 14.2).
            self._reply(request, dest, 500, now, key, headers=[("Retry-After", "1")])
            return
        if isinstance(session.refreshing, InviteClientTransaction):
            self._reply(request, dest, 491, now, key)  # our re-INVITE crossed theirs (section 14.2)
            return
        agreed, session.pending_timer = self._negotiate_timer(request, dest, key, now)
        if not agreed:
            return
        self._target_refresh(session, request)
        transaction = InviteServerTransaction(request, now, self._reliable(dest))
        self._server_tx[key] = transaction
        self._tx_dest[id(transaction)] = dest
        session.invite, session.transaction, session.reinvite = request, transaction, True
        self._respond_invite(session, 100, now)
        self._events.append(Reinvite(session.key, request))

    def _authenticated(self, request: Request, dest: Address, key: tuple[str, ...], now: float) -> str | None:
        """The user ``request`` proves to be; else it is answered here and None returned.

        No credentials, or a stale nonce: 401 with a fresh challenge. Wrong credentials:
        403, so a phone with a bad password stops instead of looping on 401s.
        """
        assert self.auth is not None
        verdict = self.auth.check(request, now)
        if verdict.username is not None:
            return verdict.username
        if "Authorization" in request.headers and not verdict.stale:
            log.warning("refused %s from %s:%d: %s", request.method, *dest, verdict.reason)
            self._reply(request, dest, 403, now, key)
            return None
        self._reply(request, dest, 401, now, key,
                    headers=[("WWW-Authenticate", value) for value in self.auth.challenge(now, stale=verdict.stale)])
        return None

    def _on_register(self, request: Request, source: Address, dest: Address, key: tuple[str, ...],
                     now: float) -> None:
        assert self.registrar is not None
        user = self._authenticated(request, dest, key, now)
        if user is None:
            return
        status, headers = self.registrar.register(request, user, source, now)
        if status == 200:
            log.info("REGISTER from %s at %s:%d: %d binding(s)", user, *source, len(headers))
        self._reply(request, dest, status, now, key, headers=headers)

    def _on_update(self, request: Request, dest: Address, key: tuple[str, ...], now: float) -> None:
        """RFC 3311: a refresh without a body is answered here; an offer goes to the TU."""
        session = self._find_session(request)
        if session is None or session.ended:
            self._reply(request, dest, 481, now, key)
            return
        agreed, timer = self._negotiate_timer(request, dest, key, now)
        if not agreed:
            return
        self._target_refresh(session, request)
        if not request.body:
            self._reply(request, dest, 200, now, key, headers=[
                ("Contact", self._session_contact(session)), *self._timer_headers_for(timer, request)])
            self._start_timer(session, timer, now)
            return
        content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if content_type != "application/sdp":
            self._reply(request, dest, 415, now, key, headers=[("Accept", "application/sdp")])
            return
        if session.reinvite or session.update is not None or isinstance(session.refreshing, InviteClientTransaction):
            # RFC 3311 section 5.2: an offer while another offer is outstanding
            self._reply(request, dest, 491, now, key)
            return
        tx = NonInviteServerTransaction(request, now, self._reliable(dest))
        self._server_tx[key] = tx
        self._tx_dest[id(tx)] = dest
        session.update = (request, tx)
        session.pending_timer = timer
        self._events.append(Reinvite(session.key, request))

    def _on_ack(self, request: Request, existing: object, now: float) -> None:
        if isinstance(existing, InviteServerTransaction):
            existing.on_ack(now)  # ACK for a non-2xx: part of the INVITE transaction
            return
        session = self._find_session(request)
        if session is None or session.ok_datagram is None:
            return  # a stray ACK: RFC 3261 section 17.2.3 says absorb it
        session.ok_retransmit = session.ok_give_up_at = None  # the ACK for our last 2xx
        if not session.confirmed:
            session.confirmed = True
            session.probe_at = now + self.keepalive if self.keepalive > 0 else None
            self._events.append(CallConfirmed(session.key, request.body))

    def _on_cancel(self, request: Request, dest: Address, key: tuple[str, ...], now: float) -> None:
        # RFC 3261 section 9.2: CANCEL matches the INVITE transaction by its branch.
        invite_key = (*key[:-1], "INVITE")
        invite_tx = self._server_tx.get(invite_key)
        if not isinstance(invite_tx, InviteServerTransaction):
            self._reply(request, dest, 481, now, key)
            return
        self._reply(request, dest, 200, now, key)
        session = next((s for s in self._sessions.values() if s.transaction is invite_tx), None)
        if session is not None and invite_tx.state is State.PROCEEDING:
            self._respond_invite(session, 487, now)
            self._sessions.pop(session.key, None)
            self._events.append(CallEnded(session.key, "cancelled by the caller"))

    def _on_notify(self, request: Request, dest: Address, key: tuple[str, ...], now: float) -> None:
        """RFC 3515 section 2.4.4: the transferee reports on our REFER with message/sipfrag."""
        session = self._find_session(request)
        event = (request.headers.get("Event") or "").split(";")[0].strip().lower()
        if session is None:
            self._reply(request, dest, 481, now, key)
            return
        if event != "refer":
            self._reply(request, dest, 489, now, key, reason="Bad Event")
            return
        self._reply(request, dest, 200, now, key)
        match = re.match(rb"SIP/2\.0 (\d{3})", request.body)
        status = int(match.group(1)) if match else 100
        terminated = (request.headers.get("Subscription-State") or "").lower().startswith("terminated")
        self._events.append(TransferProgress(session.key, status, final=status >= 200 or terminated))

    def _on_info(self, request: Request, dest: Address, key: tuple[str, ...], now: float) -> None:
        """DTMF in SIP INFO, as Asterisk sends it with ``dtmf_mode=info``.

        application/dtmf-relay carries ``Signal=5`` (and a Duration); application/dtmf
        carries the digit alone. A body-less INFO is a keepalive (RFC 2976 era): 200.
        """
        session = self._find_session(request)
        if session is None:
            self._reply(request, dest, 481, now, key)
            return
        content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if request.body and content_type not in DTMF_TYPES:
            self._reply(request, dest, 415, now, key, headers=[("Accept", ", ".join(DTMF_TYPES))])
            return
        digit = _dtmf_digit(request.body.decode("utf-8", "replace"), content_type) if request.body else None
        if request.body and digit is None:
            self._reply(request, dest, 400, now, key, reason="Bad DTMF Signal")
            return
        self._reply(request, dest, 200, now, key)
        if digit is not None:
            self._events.append(Digit(session.key, digit))

    def _on_bye(self, request: Request, dest: Address, key: tuple[str, ...], now: float) -> None:
        session = self._find_session(request)
        if session is None:
            self._reply(request, dest, 481, now, key)
            return
        self._reply(request, dest, 200, now, key)
        self._drop_session(session, "the caller hung up")

    # --- responses ---------------------------------------------------------------------

    def _on_response(self, response: Response, source: Address, now: float) -> None:
        try:
            via = parse_via(response.headers.get("Via") or "")
        except (ParseError, BadRequest):
            log.warning("dropped response without a usable Via from %s:%d", *source)
            return
        entry = self._client_tx.get(via.branch or "")
        if entry is None:
            return  # a stray or late response: nothing waits for it
        ctx, dest, on_final = entry
        final = ctx.state in (State.TRYING, State.PROCEEDING) and response.status >= 200
        # a retransmitted 2xx to our re-INVITE: the UA core owes it the same ACK again
        resent_2xx = ctx.state is State.ACCEPTED and 200 <= response.status < 300
        reply = ctx.on_response(response, now)
        if reply is not None:
            self._out.append((reply, dest))
        if final or resent_2xx:
            on_final(response, now)

    # --- helpers -----------------------------------------------------------------------

    def _respond_invite(self, session: Session, status: int, now: float, *, reason: str | None = None,
                        headers: Iterable[tuple[str, str]] = (), body: bytes = b"") -> bytes:
        tag = session.local_tag if status > 100 else None
        response = make_response(session.invite, status, reason, to_tag=tag,
                                 headers=[*headers, ("Server", self.user_agent)], body=body)
        datagram = session.transaction.respond(response, now)
        self._out.append((datagram, self._tx_dest[id(session.transaction)]))
        if status >= 300 and not session.reinvite:
            session.ended = True
        return datagram

    def _reply(self, request: Request, dest: Address, status: int, now: float, key: tuple[str, ...],
               *, reason: str | None = None, headers: Iterable[tuple[str, str]] = ()) -> None:
        """Answer a request inside a new server transaction, so retransmissions get the same answer."""
        if request.method == "INVITE":
            tx: InviteServerTransaction | NonInviteServerTransaction = InviteServerTransaction(
                request, now, self._reliable(dest))
        else:
            tx = NonInviteServerTransaction(request, now, self._reliable(dest))
        self._server_tx[key] = tx
        self._tx_dest[id(tx)] = dest
        to_tag = None if parse_name_addr(request.headers.get("To") or "").tag else _new_tag()
        response = make_response(request, status, reason, to_tag=to_tag,
                                 headers=[*headers, ("Server", self.user_agent)])
        self._out.append((tx.respond(response, now), dest))

    def _stateless_error(self, request: Request, source: Address, status: int, reason: str) -> None:
        """400/505 for a request we could not validate, sent back to its source."""
        log.warning("bad %s from %s:%d: %s", request.method, *source, reason)
        if request.method == "ACK":
            return  # never answer an ACK (RFC 3261 section 17.1.1.3)
        try:
            response = make_response(request, status, _short_reason(reason))
        except (ParseError, BadRequest, ValueError):
            return  # not even the headers needed to answer: drop
        self._out.append((response.to_bytes(), source))

    def _stamp_via(self, request: Request, via: object, source: Address) -> Address:
        """RFC 3261 section 18.2.1 and RFC 3581 section 4: record where the request came from.

        Returns where responses go: the source IP, and the source port when the client
        asked for ``rport`` (else the port it put in Via, default 5060); on a connection,
        the connection (section 18.2.2).
        """
        vias = request.headers.get_all("Via")
        top = parse_via(vias[0])
        params = dict(top.params)
        if top.host != source[0]:
            params["received"] = source[0]
        wants_rport = "rport" in params
        if wants_rport:
            params["rport"] = str(source[1])
            params["received"] = source[0]
        stamped = type(top)(top.transport, top.host, top.port, params)
        request.headers.remove("Via")
        for value in [str(stamped), *vias[1:]]:
            request.headers.add("Via", value)
        if wants_rport or source in self._flows:
            return source
        return (source[0], top.port or 5060)

    @staticmethod
    def _tx_key(request: Request, branch: str, via: object) -> tuple[str, ...]:
        """RFC 3261 section 17.2.3: branch + sent-by + method (ACK matches its INVITE).

        The CSeq number is part of the key too. A retransmission, a CANCEL and the ACK for
        a non-2xx all carry their INVITE's number, so nothing RFC 3261 matches is missed;
        but a new request that reuses a branch (pyVoIP resends its INVITE with credentials
        that way) is a new transaction, not a retransmission answered with the old 401.
        """
        method = "INVITE" if request.method == "ACK" else request.method
        sent_by = f"{via.host}:{via.port or 5060}"  # type: ignore[attr-defined]
        cseq = parse_cseq(request.headers.get("CSeq") or "")
        if branch.startswith("z9hG4bK") and len(branch) > len("z9hG4bK"):
            return (branch, sent_by, str(cseq.number), method)
        # RFC 2543 peer: no usable branch, so match on the dialog and CSeq instead.
        return (request.headers.get("Call-ID") or "", request.headers.get("From") or "",
                str(cseq.number), sent_by, method)

    def _find_session(self, request: Request) -> Session | None:
        remote = parse_name_addr(request.headers.get("From") or "")
        session = self._sessions.get(_session_key(request.headers.get("Call-ID") or "", remote.tag or ""))
        if session is None:
            return None
        to_tag = parse_name_addr(request.headers.get("To") or "").tag
        if request.method != "ACK" and to_tag != session.local_tag:
            return None
        return session

    def _session_timers(self, session: Session, now: float) -> None:
        if session.timer_at is not None and now >= session.timer_at:
            self._on_session_timer(session, now)
        if session.probe_at is not None and now >= session.probe_at and not session.ended:
            session.probe_at = None
            self._in_dialog(session, "OPTIONS", now, self._probed(session), [("Accept", "application/sdp")])
        if session.ok_give_up_at is not None and now >= session.ok_give_up_at:
            # RFC 3261 section 13.3.1.4: no ACK after 64*T1: confirm, then end with BYE.
            session.ok_retransmit = session.ok_give_up_at = None
            log.warning("call %s: no ACK for our 200 OK; ending it with BYE", session.call_id)
            self._send_bye(session, now, reason="no ACK for our 200 OK")
            return
        datagram = session.ok_retransmit.due(now) if session.ok_retransmit else None
        if datagram is not None:
            self._out.append((datagram, self._tx_dest.get(id(session.transaction), session.source)))

    def _in_dialog(self, session: Session, method: str, now: float, on_final: OnFinal,
                   headers: Iterable[tuple[str, str]] = (), body: bytes = b"") -> ClientTransaction:
        """RFC 3261 section 12.2.1.1: a request inside the dialog, sent in its own transaction.

        It goes back along the flow the INVITE came on (see the module docstring).
        """
        session.local_cseq += 1
        request = self._dialog_request(session, method, session.local_cseq, headers, body)
        return self._start_client(request, self._dialog_dest(session), on_final, now)

    def _reliable(self, dest: Address) -> bool:
        return dest in self._flows

    def _session_contact(self, session: Session) -> str:
        return self.contact(session.source[0], self.transport_to(self._dialog_dest(session)))

    def _dialog_dest(self, session: Session) -> Address:
        return self._tx_dest.get(id(session.transaction), session.source)

    def _dialog_request(self, session: Session, method: str, cseq: int,
                        headers: Iterable[tuple[str, str]] = (), body: bytes = b"") -> Request:
        out = Headers()
        local = _host_literal(self.host_for(session.source[0]))
        transport = self.transport_to(self._dialog_dest(session)).upper()
        port = self.tls_port if transport == "TLS" and self.tls_port else self.port
        out.add("Via", f"SIP/2.0/{transport} {local}:{port};branch={new_branch()};rport")
        out.add("Max-Forwards", "70")
        for route in session.route_set:
            out.add("Route", route)
        out.add("From", str(session.local.with_tag(session.local_tag)))
        out.add("To", str(session.remote))
        out.add("Call-ID", session.call_id)
        out.add("CSeq", str(CSeq(cseq, method)))
        for name, value in headers:
            out.add(name, value)
        out.add("User-Agent", self.user_agent)
        return Request(method, session.remote_target, out, body)

    def _start_client(self, request: Request, dest: Address, on_final: OnFinal, now: float) -> ClientTransaction:
        ctx: ClientTransaction
        if request.method == "INVITE":
            ctx = InviteClientTransaction(request, now, self._reliable(dest))
        else:
            ctx = NonInviteClientTransaction(request, now, self._reliable(dest))
        self._client_tx[parse_via(request.headers.get("Via") or "").branch or ""] = (ctx, dest, on_final)
        self._out.append((ctx.start(), dest))
        return ctx

    # --- session timers (RFC 4028) ------------------------------------------------------

    def _negotiate_timer(self, request: Request, dest: Address, key: tuple[str, ...],
                         now: float) -> tuple[bool, SessionTimer | None]:
        """The session timer ``request`` asks for; (False, None) once it got its 422."""
        try:
            return True, negotiate(request.headers)
        except IntervalTooSmall as exc:
            self._reply(request, dest, 422, now, key, headers=[("Min-SE", str(exc.min_se))])
            return False, None

    def _timer_headers(self, session: Session, request: Request) -> list[tuple[str, str]]:
        return self._timer_headers_for(session.pending_timer, request)

    @staticmethod
    def _timer_headers_for(timer: SessionTimer | None, request: Request) -> list[tuple[str, str]]:
        return timer.response_headers(supports_timer(request.headers)) if timer else []

    def _start_timer(self, session: Session, timer: SessionTimer | None, now: float) -> None:
        """A refresh (theirs or ours) succeeded: the interval starts again, or timers stop."""
        session.timer, session.pending_timer = timer, None
        if timer is None:
            session.timer_at = None
        else:
            session.timer_at = now + (timer.refresh_in() if timer.we_refresh else timer.expire_in())

    def _on_session_timer(self, session: Session, now: float) -> None:
        timer = session.timer
        session.timer_at = None
        if timer is None or session.ended:
            return
        if not timer.we_refresh:
            log.warning("call %s: no session refresh from the caller's side in %d s; ending it",
                        session.call_id, timer.interval)
            self._send_bye(session, now, reason="session timer expired (RFC 4028)")
            return
        headers = [*timer.request_headers(), ("Contact", self._session_contact(session))]
        if "UPDATE" in session.peer_allow:
            session.refreshing = self._in_dialog(session, "UPDATE", now, self._refreshed(session), headers)
        else:
            session.refreshing = self._in_dialog(
                session, "INVITE", now, self._refreshed(session),
                [*headers, ("Allow", ", ".join(ALLOWED)), ("Content-Type", "application/sdp")], session.local_sdp)
        session.refresh_ack = None

    def _refreshed(self, session: Session) -> OnFinal:
        """What to do with the answer to our refresh."""
        started = session.timer

        def on_final(response: Response | None, now: float) -> None:
            if response is not None and 200 <= response.status < 300 and _cseq_method(response) == "INVITE":
                self._ack_refresh(session, response)
            if session.refreshing is None or session.ended or started is None:
                return  # a retransmitted 2xx (ACKed above), or the call is over
            session.refreshing = None
            if response is None or response.status in (408, 481):
                # RFC 3261 section 12.2.1.2: the dialog is gone on the other side
                status = 408 if response is None else response.status
                log.warning("call %s: session refresh got %d; ending the call", session.call_id, status)
                self._send_bye(session, now, reason=f"session refresh failed ({status})")
            elif response.status < 300:
                self._start_timer(session, from_response(response), now)
            elif response.status == 491:
                session.timer_at = now + random.uniform(0, GLARE_WAIT)
            elif response.status == 422 and (min_se := min_se_of(response)) is not None:
                session.timer = SessionTimer(max(min_se, started.interval), we_refresh=True)
                session.timer_at = now
            else:
                # The peer would not refresh with us: the call lives until the interval runs out.
                log.warning("call %s: session refresh refused (%d)", session.call_id, response.status)
                session.timer = SessionTimer(started.interval, we_refresh=False)
                session.timer_at = now + started.refresh_in() - min(32, started.interval / 3)

        return on_final

    def _probed(self, session: Session) -> OnFinal:
        """The answer to our in-dialog OPTIONS: any answer but 408 and 481 means the call is
        still there on the other side (RFC 3261 section 12.2.1.2)."""

        def on_final(response: Response | None, now: float) -> None:
            if session.ended:
                return
            if response is None or response.status in (408, 481):
                status = "no answer" if response is None else str(response.status)
                log.warning("call %s: keepalive OPTIONS got %s; ending the call", session.call_id, status)
                self._send_bye(session, now, reason=f"the caller's side is gone (keepalive: {status})")
            else:
                session.probe_at = now + self.keepalive

        return on_final

    def _ack_refresh(self, session: Session, response: Response) -> None:
        """RFC 3261 section 13.2.2.4: the UA core ACKs a 2xx, outside any transaction, and
        sends the same ACK again for each retransmission of that 2xx."""
        if session.refresh_ack is None:
            cseq = parse_cseq(response.headers.get("CSeq") or "").number
            ack = self._dialog_request(session, "ACK", cseq)
            ack.headers.remove("To")
            ack.headers.add("To", response.headers.get("To") or str(session.remote))
            session.refresh_ack = ack.to_bytes()
        self._out.append((session.refresh_ack, self._dialog_dest(session)))

    def _target_refresh(self, session: Session, request: Request) -> None:
        """RFC 3261 section 12.2.2: a re-INVITE or UPDATE may move the peer (its Contact)."""
        contact = request.headers.get_all("Contact")
        if contact:
            session.remote_target = parse_name_addr(contact[0]).uri
        if "Allow" in request.headers:
            session.peer_allow = _allowed(request)

    def _send_bye(self, session: Session, now: float, reason: str = "trivox hung up") -> None:
        """RFC 3261 section 15.1.1: BYE ends the call at once; its answer only frees the dialog."""
        self._in_dialog(session, "BYE", now, lambda response, now: self._drop_session(session))
        session.ok_retransmit = session.ok_give_up_at = None
        self._end(session, reason)

    def _send_register(self, registration: Registration, request: Request | None, now: float) -> None:
        """Send what the registration asked for: a REGISTER, or an OPTIONS keepalive."""
        if request is not None and request.method == "OPTIONS":
            self._start_client(request, registration.account.registrar,
                               lambda response, now: self._probe_final(registration, response, now), now)
        elif request is not None:
            self._start_client(request, registration.account.registrar,
                               lambda response, now: self._registration_final(registration, response, now), now)
        self._collect(registration)

    def _probe_final(self, registration: Registration, response: Response | None, now: float) -> None:
        registration.on_probe_answer(response, now)
        self._send_register(registration, registration.on_timer(now), now)

    def _registration_final(self, registration: Registration, response: Response | None, now: float) -> None:
        if response is None:
            registration.on_timeout(now)
            self._collect(registration)
        else:
            self._send_register(registration, registration.on_response(response, now), now)

    def _collect(self, registration: Registration) -> None:
        for event in registration.events:
            if isinstance(event, AddressLearned):
                self._public[event.registrar[0]] = (event.host, event.port)
        self._events += registration.events
        registration.events.clear()

    def _end(self, session: Session, reason: str) -> None:
        if not session.ended:
            session.ended = True
            self._events.append(CallEnded(session.key, reason))

    def _drop_session(self, session: Session, reason: str | None = None) -> None:
        if reason is not None:
            self._end(session, reason)
        self._sessions.pop(session.key, None)

    def _end_by_transaction(self, tx: InviteServerTransaction, reason: str) -> None:
        for session in list(self._sessions.values()):
            if session.transaction is tx:
                self._drop_session(session, reason)


def _dtmf_digit(body: str, content_type: str) -> str | None:
    """The digit of an INFO body; Signal=10 and 11 are * and # (as in RFC 4733's events)."""
    if content_type == "application/dtmf":
        value = body.strip()
    else:
        match = re.search(r"^\s*Signal\s*=\s*(\S+)", body, re.MULTILINE | re.IGNORECASE)
        if match is None:
            return None
        value = match.group(1)
    value = {"10": "*", "11": "#"}.get(value, value).upper()
    return value if len(value) == 1 and value in DTMF_DIGITS else None


def _cseq_method(message: Request | Response) -> str:
    try:
        return parse_cseq(message.headers.get("CSeq") or "").method
    except (ParseError, BadRequest):
        return ""


def _allowed(request: Request) -> frozenset[str]:
    return frozenset(method.strip().upper() for method in request.headers.get_all("Allow"))


def _inside(address: str, networks: Sequence[IPNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in networks)


def _session_key(call_id: str, remote_tag: str) -> str:
    return f"{call_id};{remote_tag}"


def _new_tag() -> str:
    return secrets.token_hex(6)


def _host_literal(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _short_reason(text: str) -> str:
    """A reason phrase must be one line of text (RFC 3261 section 25.1 Reason-Phrase)."""
    return " ".join(text.split())[:80] or "Bad Request"
