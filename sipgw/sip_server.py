"""SIP over UDP, TCP and TLS: the thin Trio adapter that drives the sans-IO ``UserAgent``.

One task reads datagrams into the user agent, one fires its timers, and each TCP or TLS
connection has a reader (bytes into a ``StreamParser``, messages into the user agent) and
a writer. After each step the adapter sends what the user agent queued, on the
connection to that peer if there is one, else by UDP, and acts on its events: a new
call becomes a ``SipLeg`` run in the calls nursery; an ended call cancels that call's
nursery. TCP listens on the UDP port (RFC 3261 section 18: a UA does both).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import math
import secrets
import socket
import ssl
from collections.abc import Callable
from functools import partial

import trio

from dialog.leg import DIGIT_QUEUE
from media.codecs import Codec, codec_by_name
from media.pacer import Pacer
from media.rtp_stream import RtpStream, open_rtp_sockets

from .calls import Calls
from .config import Config, HostPort
from .errors import ListenError
from .sip.digest import DigestServer
from .sip.message import StreamParser, parse_name_addr
from .sip.registrar import Registrar
from .sip.sdp import NotAcceptable, SdpError, answer_offer, make_offer, parse_sdp, read_answer
from .sip.register import (
    Account,
    AddressLearned,
    Registered,
    RegistrationFailed,
    RegistrationState,
    Unregistered,
)
from .sip.ua import CallConfirmed, CallEnded, Digit, IncomingCall, Reinvite, TransferProgress, UserAgent

log = logging.getLogger("trivox.sip")

#: Larger than any SIP datagram we accept (the parser caps messages at 64 KiB).
MAX_DATAGRAM = 65536
#: Time a transfer may take before the dialog is told it failed.
TRANSFER_TIMEOUT = 30.0
#: Time registrars get to confirm our Expires: 0 at shutdown.
UNREGISTER_GRACE = 2.0
WILDCARDS = ("0.0.0.0", "::", "")
#: Messages queued for one connection's writer; past that, messages to it are dropped and logged.
STREAM_QUEUE = 256
#: Attempts at finding a port free on both UDP and TCP when the configured port is 0.
BIND_ATTEMPTS = 20
#: Receive size for stream connections.
STREAM_CHUNK = 16384


class SipLeg:
    """One SIP call as the dialog sees it: RTP media, answer by 200 OK, hang up by BYE."""

    def __init__(self, server: SipServer, key: str, call_id: str, caller: str,
                 rtp: RtpStream, sdp_answer: bytes, session_id: int) -> None:
        self.call_id = call_id
        self.caller = caller
        self.sample_rate = rtp.codec.sample_rate
        self.inbound = rtp.inbound
        self.pacer = Pacer(self.sample_rate)
        self.end_reason = ""
        self.cancel_scope: trio.CancelScope | None = None
        self.rtp = rtp
        self._server = server
        self.key = key
        #: delayed offer: our 200 carried the offer, and the ACK will carry the answer
        self.awaiting_answer = False
        self.sdp = sdp_answer  # our current session description
        self.session_id = session_id
        self.session_version = 1
        self._transfer_send: trio.MemorySendChannel[tuple[int, bool]] | None = None
        self._digit_send, self.digits = trio.open_memory_channel[str](DIGIT_QUEUE)

    async def answer(self) -> None:
        await self._server.command(lambda ua, now: ua.answer(self.key, self.sdp, now))

    async def hangup(self) -> None:
        self.end_reason = self.end_reason or "trivox hung up"
        await self._server.command(lambda ua, now: ua.hangup(self.key, now))

    async def transfer(self, target: str) -> bool:
        """REFER, then wait for the transferee's final report (RFC 3515)."""
        self._transfer_send, receive = trio.open_memory_channel[tuple[int, bool]](math.inf)
        await self._server.command(lambda ua, now: ua.refer(self.key, target, now))
        with trio.move_on_after(TRANSFER_TIMEOUT):
            async for status, final in receive:
                log.info("transfer to %s: %d", target, status)
                if final:
                    return 200 <= status < 300
        log.warning("transfer to %s: no final report in %.0f s", target, TRANSFER_TIMEOUT)
        return False

    async def send_digits(self, digits: str) -> bool:
        """RFC 4733 events in the RTP stream, when the SDP agreed telephone-event."""
        if not await self.rtp.send_digits(digits):
            log.warning("cannot send DTMF %s: the caller's SDP has no telephone-event, or we are on hold",
                        digits)
            return False
        return True

    def digit(self, digit: str) -> None:
        log.info("DTMF %s", digit)
        try:
            self._digit_send.send_nowait(digit)
        except trio.WouldBlock:
            log.warning("dialog is not reading DTMF; dropped %s", digit)

    def transfer_progress(self, status: int, final: bool) -> None:
        if self._transfer_send is not None:
            self._transfer_send.send_nowait((status, final))

    async def pacer_sink(self, frame: bytes | None) -> None:
        await self.rtp.send(frame)

    def receive_tick(self) -> None:
        self.rtp.receive()

    def ended(self, reason: str) -> None:
        self.end_reason = self.end_reason or reason
        if self.cancel_scope is not None:
            self.cancel_scope.cancel()


class SipServer:
    def __init__(self, config: Config, calls: Calls, calls_nursery: trio.Nursery,
                 tls: ssl.SSLContext | None = None) -> None:
        """``tls``: the server context for SIP over TLS (``sip.tls_port``), if configured."""
        self.config = config
        self._calls = calls
        self._calls_nursery = calls_nursery
        self._tls = tls
        self._sock: trio.socket.SocketType | None = None
        self._ua: UserAgent | None = None
        self._legs: dict[str, SipLeg] = {}
        self._streams: dict[tuple[str, int], trio.MemorySendChannel[bytes]] = {}
        self._wakeup = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED) -> None:
        sip = self.config.sip
        sock, tcp = await self._bind()
        with sock:
            self._sock = sock
            host, port = sock.getsockname()[:2]
            tls = await self._listen_tls() if self._tls is not None else []
            trusted = [ipaddress.ip_network(n, strict=False) for n in sip.trusted_networks]
            users = {user.username: user.password for user in sip.users}
            auth = DigestServer(sip.realm, users) if users else None
            self._ua = UserAgent(port=port, host_for=self._local_host, user_agent=sip.user_agent,
                                 trusted=trusted, keepalive=sip.keepalive, learn_address=not sip.advertise,
                                 tls_port=sip.tls_port if tls else None, auth=auth,
                                 registrar=Registrar() if users else None, challenge_invites=sip.challenge_invites)
            log.info("SIP listening on udp %s", HostPort(host, port))
            for listener in tcp:
                log.info("SIP listening on tcp %s", HostPort(*listener.socket.getsockname()[:2]))
            for listener in tls:
                log.info("SIP listening on tls %s", HostPort(*listener.transport_listener.socket.getsockname()[:2]))
            task_status.started((host, port))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._timer_loop)
                nursery.start_soon(self._register_accounts)
                if tcp:
                    nursery.start_soon(partial(trio.serve_listeners, partial(self._serve_stream, transport="tcp"), tcp))
                if tls:
                    nursery.start_soon(partial(trio.serve_listeners, partial(self._serve_stream, transport="tls"), tls))
                await self._receive_loop()

    async def _bind(self) -> tuple[trio.socket.SocketType, list[trio.SocketListener]]:
        """The UDP socket and, when TCP is on, TCP listeners on the same port.

        With port 0 (tests), the kernel picks a UDP port that may be taken on TCP: try again.
        """
        listen = self.config.sip.listen
        family = trio.socket.AF_INET6 if ":" in listen.host else trio.socket.AF_INET
        for _ in range(BIND_ATTEMPTS):
            sock = trio.socket.socket(family, trio.socket.SOCK_DGRAM)
            try:
                await sock.bind((listen.host, listen.port))
            except OSError as exc:
                sock.close()
                raise ListenError(f"cannot listen for SIP on udp {listen}: {exc.strerror}") from None
            if "tcp" not in self.config.sip.transports:
                return sock, []
            port = sock.getsockname()[1]
            try:
                return sock, await trio.open_tcp_listeners(port, host=listen.host or None)
            except OSError as exc:
                sock.close()
                if listen.port != 0 or exc.errno != errno.EADDRINUSE:
                    raise ListenError(f"cannot listen for SIP on tcp {HostPort(listen.host, port)}: "
                                      f"{exc.strerror}") from None
        raise ListenError(f"no port free on both udp and tcp for SIP on {listen.host}")

    async def _listen_tls(self) -> list[trio.SSLListener[trio.SocketStream]]:
        assert self._tls is not None
        listen = self.config.sip.listen
        try:
            tcp = await trio.open_tcp_listeners(self.config.sip.tls_port, host=listen.host or None)
        except OSError as exc:
            raise ListenError(f"cannot listen for SIP on tls {HostPort(listen.host, self.config.sip.tls_port)}: "
                              f"{exc.strerror}") from None
        return [trio.SSLListener(listener, self._tls, https_compatible=False) for listener in tcp]

    async def unregister(self) -> None:
        """Withdraw every registration (Expires: 0) and give the registrars a moment to answer."""
        if self._ua is None or not self._ua.registrations:
            return
        await self.command(lambda ua, now: ua.unregister_all(now))
        with trio.move_on_after(UNREGISTER_GRACE):
            while any(r.state is RegistrationState.UNREGISTERING for r in self._ua.registrations):
                await trio.sleep(0.05)

    async def command(self, step: Callable[[UserAgent, float], None]) -> None:
        """Run ``step(ua, now)`` on the user agent and send what it produced."""
        assert self._ua is not None
        step(self._ua, trio.current_time())
        await self._after_step()

    # --- loops -----------------------------------------------------------------------

    async def _receive_loop(self) -> None:
        assert self._sock is not None and self._ua is not None
        while True:
            data, source = await self._sock.recvfrom(MAX_DATAGRAM)
            self._ua.receive(data, (source[0], source[1]), trio.current_time())
            await self._after_step()

    async def _timer_loop(self) -> None:
        assert self._ua is not None
        while True:
            self._wakeup = trio.Event()
            deadline = self._ua.next_deadline()
            with trio.move_on_at(math.inf if deadline is None else deadline):
                await self._wakeup.wait()
            self._ua.handle_timers(trio.current_time())
            await self._after_step()

    async def _after_step(self) -> None:
        """Act on the user agent's events, then send everything it queued, in order."""
        assert self._sock is not None and self._ua is not None
        for event in self._ua.events():
            if isinstance(event, IncomingCall):
                self._calls_nursery.start_soon(self._start_call, event)
            elif isinstance(event, CallEnded):
                leg = self._legs.pop(event.key, None)
                if leg is not None:
                    leg.ended(event.reason)
            elif isinstance(event, Reinvite):
                self._reinvite(event)
            elif isinstance(event, Digit):
                pressed = self._legs.get(event.key)
                if pressed is not None:
                    pressed.digit(event.digit)
            elif isinstance(event, TransferProgress):
                transferring = self._legs.get(event.key)
                if transferring is not None:
                    transferring.transfer_progress(event.status, event.final)
            elif isinstance(event, CallConfirmed):
                log.debug("ACK received for %s", event.key)
                confirmed = self._legs.get(event.key)
                if confirmed is not None and confirmed.awaiting_answer:
                    self._take_answer(confirmed, event.sdp)
            elif isinstance(event, Registered):
                log.info("registered %s for %d s", event.aor, event.expires)
            elif isinstance(event, RegistrationFailed):
                log.warning("registration of %s failed: %s; retrying in %.0f s", event.aor, event.reason,
                            event.retry_in)
            elif isinstance(event, Unregistered):
                log.info("unregistered %s", event.aor)
            elif isinstance(event, AddressLearned):
                log.info("%s: the registrar sees us at %s:%d; Contact and SDP now say so", event.aor,
                         event.host, event.port)
        # Shielded: the caller may be a call's own task whose nursery an event above just
        # cancelled (our own hangup ends the call), and the user agent's queue is already
        # drained, so a cancelled send would lose the BYE for good. UDP sends do not block,
        # and a connection's messages only go into its writer's queue.
        with trio.CancelScope(shield=True):
            for datagram, dest in self._ua.outgoing():
                stream = self._streams.get(dest)
                if stream is not None:
                    try:
                        stream.send_nowait(datagram)
                    except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                        log.warning("SIP connection to %s:%d is stuck or gone; message dropped", *dest)
                    continue
                try:
                    await self._sock.sendto(datagram, dest)
                except OSError as exc:
                    log.warning("SIP send to %s:%d failed: %s", dest[0], dest[1], exc)
        self._wakeup.set()  # the deadline may have moved

    async def _serve_stream(self, stream: trio.SocketStream | trio.SSLStream[trio.SocketStream],
                            transport: str) -> None:
        """One TCP or TLS connection: SIP messages framed by Content-Length, both ways.

        A framing error closes this connection only (RFC 3261 section 18.3); the messages
        already answered are flushed first.
        """
        assert self._ua is not None
        socket_stream = stream.transport_stream if isinstance(stream, trio.SSLStream) else stream
        try:
            peer_address = socket_stream.socket.getpeername()
        except OSError:
            await trio.aclose_forcefully(stream)  # reset before we got to it
            return
        peer = (str(peer_address[0]), int(peer_address[1]))
        send, receive = trio.open_memory_channel[bytes](STREAM_QUEUE)
        self._streams[peer] = send
        parser = StreamParser()
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._stream_writer, stream, receive, peer)
                try:
                    while data := await stream.receive_some(STREAM_CHUNK):
                        parser.feed(data)
                        framed = self._ua.receive_stream(parser, peer, trio.current_time(), transport)
                        await self._after_step()
                        if not framed:
                            break
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    log.info("SIP %s connection from %s:%d broke: %s", transport, *peer, exc)
                finally:
                    self._streams.pop(peer, None)
                    self._ua.flow_closed(peer)
                    send.close()  # the writer sends what is queued, then ends
        finally:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)

    @staticmethod
    async def _stream_writer(stream: trio.abc.Stream, queue: trio.MemoryReceiveChannel[bytes],
                             peer: tuple[str, int]) -> None:
        try:
            async for message in queue:
                await stream.send_all(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            log.info("SIP send to %s:%d failed: %s", *peer, exc)

    def _take_answer(self, leg: SipLeg, body: bytes) -> None:
        """The ACK's answer to the offer in our 200 (delayed offer): media can flow now.

        RFC 3261 section 13.3.1.4 leaves a UAS that gets no usable answer one way out:
        end the call with BYE.
        """
        leg.awaiting_answer = False
        try:
            negotiated = read_answer(parse_sdp(body), self.config.sip.codecs)
        except SdpError as exc:  # NotAcceptable too
            log.warning("call %s: no usable answer in the ACK (%s); hanging up", leg.call_id, exc or "no SDP")
            leg.end_reason = "no usable SDP answer in the ACK"
            assert self._ua is not None
            self._ua.hangup(leg.key, trio.current_time())
            return
        if negotiated.codec != leg.rtp.codec.name or negotiated.payload_type != leg.rtp.payload_type:
            leg.rtp.change_codec(codec_by_name(negotiated.codec), negotiated.payload_type)
        leg.rtp.retarget((negotiated.remote_address, negotiated.remote_port))
        leg.rtp.event_payload_type = negotiated.telephone_event_pt
        leg.rtp.held = negotiated.direction in ("sendonly", "inactive")
        log.info("call %s: the caller answered our offer with %s", leg.call_id, negotiated.codec)

    def _reinvite(self, event: Reinvite) -> None:
        """Answer a new offer in a call (re-INVITE or UPDATE): hold, resume, a moved peer, a
        codec change, a session refresh.

        Runs inside ``_after_step``, whose send loop then carries the answer out.
        """
        assert self._ua is not None
        leg = self._legs.get(event.key)
        now = trio.current_time()
        if leg is None:
            self._ua.reject(event.key, 481, now)
            return
        if not event.request.body:
            # No offer (RFC 3261 section 14.2): our 2xx offers our current SDP again.
            self._ua.answer(event.key, leg.sdp, now)
            return
        # The codec in use first, so an offer that still has it keeps it; others of the
        # same rates (PCMU <-> PCMA) are a codec change the stream can follow.
        current = leg.rtp.codec
        codecs = [current.name, *(name for name in self.config.sip.codecs
                                  if name != current.name and _same_rates(codec_by_name(name), current))]
        try:
            sdp, negotiated = answer_offer(
                parse_sdp(event.request.body), local_address=self._local_host(leg.rtp.remote[0]),
                rtp_port=leg.rtp.local_port, codecs=codecs, session_id=leg.session_id,
                session_version=leg.session_version + 1)
        except NotAcceptable as exc:
            log.warning("%s refused: %s", event.request.method, exc)
            self._ua.reject(event.key, 488, now)
            return
        except SdpError as exc:
            log.warning("re-INVITE with unusable SDP: %s", exc)
            self._ua.reject(event.key, 400, now, reason="Bad SDP")
            return
        leg.session_version += 1
        leg.sdp = sdp
        if negotiated.codec != current.name:
            log.info("call %s moves from %s to %s", leg.call_id, current.name, negotiated.codec)
            leg.rtp.change_codec(codec_by_name(negotiated.codec), negotiated.payload_type)
        leg.rtp.event_payload_type = negotiated.telephone_event_pt
        # RFC 3264 section 8.4: c=0.0.0.0 is the old (RFC 2543) way to say hold.
        old_style_hold = negotiated.remote_address in ("0.0.0.0", "::")
        if not old_style_hold:
            leg.rtp.retarget((negotiated.remote_address, negotiated.remote_port))
        held = old_style_hold or negotiated.direction in ("sendonly", "inactive")
        if held != leg.rtp.held:
            log.info("call %s %s", leg.call_id, "put on hold" if held else "taken off hold")
        leg.rtp.held = held
        self._ua.answer(event.key, sdp, now)

    # --- registration -----------------------------------------------------------------

    async def _register_accounts(self) -> None:
        """Start one registration per configured account; a name that does not resolve is logged."""
        for entry in self.config.sip.register:
            try:
                infos = await trio.socket.getaddrinfo(entry.registrar.host, entry.registrar.port,
                                                      type=trio.socket.SOCK_DGRAM)
            except OSError as exc:
                log.error("registrar %s does not resolve: %s; not registering %s", entry.registrar, exc,
                          entry.username)
                continue
            address = infos[0][4]
            aor = entry.aor or f"sip:{entry.username}@{entry.registrar.host}"
            account = Account(registrar=(str(address[0]), int(address[1])), aor=aor, username=entry.username,
                              password=entry.password, expires=entry.expires)
            log.info("registering %s at %s", aor, entry.registrar)
            await self.command(partial(_register, account))

    # --- calls -----------------------------------------------------------------------

    async def _start_call(self, event: IncomingCall) -> None:
        """Negotiate media for a new INVITE and run the call; rejects what cannot work."""
        assert self._ua is not None
        request = event.request
        call_id = request.headers.get("Call-ID") or event.key
        try:
            offer = parse_sdp(request.body) if request.body else None
        except SdpError as exc:
            log.warning("call %s: unusable SDP offer: %s", call_id, exc)
            await self.command(lambda ua, now: ua.reject(event.key, 400, now, reason="Bad SDP"))
            return
        rtp_config = self.config.rtp
        try:
            sockets = open_rtp_sockets(self.config.sip.listen.host, rtp_config.port_min, rtp_config.port_max)
        except OSError as exc:
            log.error("call %s: no RTP port: %s", call_id, exc)
            await self.command(lambda ua, now: ua.reject(event.key, 503, now))
            return
        session_id = secrets.randbelow(2**31)
        local_address = self._local_host(event.source[0])
        if offer is None:
            # Delayed offer: we offer in the 200 and send nothing until the ACK's answer.
            codec = codec_by_name(self.config.sip.codecs[0])
            sdp = make_offer(local_address=local_address, rtp_port=sockets.port,
                             codecs=self.config.sip.codecs, session_id=session_id)
            rtp = RtpStream(sockets, codec, (event.source[0], 0), min_delay_ms=rtp_config.jitter_min_ms,
                            max_delay_ms=rtp_config.jitter_max_ms, cname=f"trivox@{local_address}")
            rtp.held = True
        else:
            try:
                sdp, negotiated = answer_offer(offer, local_address=local_address, rtp_port=sockets.port,
                                               codecs=self.config.sip.codecs, session_id=session_id)
            except NotAcceptable as exc:
                sockets.close()
                log.warning("call %s: %s", call_id, exc)
                await self.command(lambda ua, now: ua.reject(event.key, 488, now))
                return
            rtp = RtpStream(sockets, codec_by_name(negotiated.codec),
                            (negotiated.remote_address, negotiated.remote_port),
                            payload_type=negotiated.payload_type, min_delay_ms=rtp_config.jitter_min_ms,
                            max_delay_ms=rtp_config.jitter_max_ms,
                            event_payload_type=negotiated.telephone_event_pt, cname=f"trivox@{local_address}")
        caller = parse_name_addr(request.headers.get("From") or "").uri
        leg = SipLeg(self, event.key, call_id, caller, rtp, sdp, session_id)
        leg.awaiting_answer = offer is None
        rtp.on_digit = leg.digit  # RFC 4733 events, beside SIP INFO
        if not self._ua.active(event.key):  # CANCELled while we were setting up
            rtp.close()
            return
        self._legs[event.key] = leg
        try:
            await self._calls.run(leg, [])
        finally:
            log.info("call %s media: %s", call_id, rtp.summary())
            rtp.close()
            if self._legs.pop(event.key, None) is not None:
                await self.command(lambda ua, now: ua.hangup(event.key, now))

    def _local_host(self, peer: str) -> str:
        """The address we advertise (Via, Contact, SDP): configured, learned from the peer's
        registrar answers (NAT), bound, or the one that routes to the peer."""
        if self.config.sip.advertise:
            return self.config.sip.advertise
        learned = self._ua.public_host(peer) if self._ua is not None else None
        if learned is not None:
            return learned
        if self.config.sip.listen.host not in WILDCARDS:
            return self.config.sip.listen.host
        return _route_source(peer)


def _same_rates(codec: Codec, other: Codec) -> bool:
    """Whether a call can move between the two without changing its audio rate."""
    return (codec.clock_rate, codec.sample_rate) == (other.clock_rate, other.sample_rate)


def _register(account: Account, ua: UserAgent, now: float) -> None:
    ua.register(account, now)


def _route_source(peer: str) -> str:
    """The local address the kernel would use to reach ``peer``. Sends nothing."""
    family = socket.AF_INET6 if ":" in peer else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((peer, 9))
            return probe.getsockname()[0]
        except OSError:
            return "127.0.0.1" if family == socket.AF_INET else "::1"
