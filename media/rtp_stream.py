"""One call's RTP and RTCP over UDP: the thin adapter around the sans-IO RTP pieces.

Symmetric RTP (RFC 4961): we send from the port we receive on, one port pair per call
(RTP on an even port, RTCP on the next, RFC 3550 section 11). We send to the address the
SDP gave until the first valid packet arrives, then to that packet's source (latching),
which is what gets media through a NAT; other sources are ignored from then on.

Everything happens on the call's 20 ms tick (its pacer's, which the server's media
clock drives), in two halves: :meth:`RtpStream.send` sends our next frame (or nothing, in
a silence; or an RFC 4733 event packet while a key press is being sent), and once every
call has sent, :meth:`RtpStream.receive` reads the packets that arrived since the last
tick, plays out one frame from the jitter buffer towards the dialog and, every few
seconds, sends an RTCP report. Packets are read without waiting, with the kernel's
receive timestamps (SO_TIMESTAMPNS), so the jitter buffer sees when each packet really
arrived, while a call costs no wake-up of its own per packet in or out: at hundreds of
calls, that is most of a core. Frames are 20 ms at the codec's sample rate (16 kHz for
G.722 and L16), and the RTP timestamp moves on the codec's clock.
"""

from __future__ import annotations

import errno
import logging
import random
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

import trio

from .audio import FRAME_MS, silence
from .codecs import Codec
from .dtmf import DEFAULT_DURATION_MS, DtmfReceiver, DtmfSender
from .jitter import DEFAULT_MAX_DELAY_MS, DEFAULT_MIN_DELAY_MS, JitterBuffer, JitterStats
from .rtcp import RtcpError, RtcpSession
from .rtp import RtpError, RtpPacket, RtpSender, parse_rtp

log = logging.getLogger("trivox.rtp")

Address = tuple[str, int]

#: Larger than any RTP packet we accept (a 60 ms G.711 frame is 492 bytes).
MAX_DATAGRAM = 2048
#: Inbound frames that may wait for the dialog's ears (5 s) before we drop.
INBOUND_QUEUE = 250
#: Ports tried before giving up on the configured range.
BIND_ATTEMPTS = 100
#: Linux's SO_TIMESTAMPNS (asm-generic/socket.h); the socket module does not name it.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
#: RTCP comes every few seconds: its socket is read every half second, not every tick.
RTCP_READ_TICKS = 25
_TIMESPEC = struct.Struct("@qq")
_ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size)


@dataclass
class RtpSockets:
    """A call's bound, non-blocking UDP pair: RTP on an even port, RTCP on the next."""

    rtp: socket.socket
    rtcp: socket.socket

    @property
    def port(self) -> int:
        return self.rtp.getsockname()[1]

    def close(self) -> None:
        self.rtp.close()
        self.rtcp.close()


def open_rtp_sockets(host: str, port_min: int, port_max: int) -> RtpSockets:
    """Bind a free even/odd port pair in [port_min, port_max] (RFC 3550 section 11)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    evens = range(port_min + port_min % 2, port_max, 2)
    for port in random.sample(evens, min(BIND_ATTEMPTS, len(evens))):
        pair = []
        try:
            for offset in (0, 1):
                sock = socket.socket(family, socket.SOCK_DGRAM)
                pair.append(sock)
                sock.bind((host, port + offset))
        except OSError as exc:
            for sock in pair:
                sock.close()
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                continue
            raise
        for sock in pair:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        return RtpSockets(*pair)
    raise OSError(errno.EADDRINUSE, f"no free RTP port pair in {port_min}-{port_max}")


def _datagrams(sock: socket.socket) -> list[tuple[bytes, Address, float | None]]:
    """Everything waiting on ``sock``: (data, source, kernel arrival time in Unix seconds)."""
    out = []
    while True:
        try:
            data, ancillary, _, source = sock.recvmsg(MAX_DATAGRAM, _ANCILLARY)
        except (BlockingIOError, InterruptedError):
            return out
        except OSError as exc:  # ICMP port unreachable from an earlier send, and the like
            log.debug("RTP receive: %s", exc)
            continue
        arrival = None
        for level, kind, cdata in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                arrival = _unix_time(cdata)
                break
        out.append((data, (source[0], source[1]), arrival))


def _unix_time(timespec: bytes) -> float:
    seconds, nanoseconds = _TIMESPEC.unpack(timespec[:_TIMESPEC.size])
    return seconds + nanoseconds / 1e9


class RtpStream:
    """Send and receive one RTP stream of one codec, with RFC 4733 events both ways and
    RTCP reports, all driven by :meth:`tick`."""

    def __init__(self, sockets: RtpSockets, codec: Codec, remote: Address,
                 *, payload_type: int | None = None, event_payload_type: int | None = None,
                 min_delay_ms: int = DEFAULT_MIN_DELAY_MS, max_delay_ms: int = DEFAULT_MAX_DELAY_MS,
                 cname: str = "trivox") -> None:
        """``event_payload_type``: the RFC 4733 telephone-event type the SDP agreed; its
        digits go to ``on_digit``, and :meth:`send_digits` needs it. ``cname``: our
        RTCP name (RFC 3550 section 6.5.1)."""
        self.codec = codec
        self.event_payload_type = event_payload_type
        self.on_digit: Callable[[str], None] | None = None
        self.remote = remote
        self._sockets = sockets
        self._payload_type = codec.payload_type if payload_type is None else payload_type
        self._encoder = codec.transcoder()
        self._sender = RtpSender(self._payload_type, codec.clock_rate)
        self._jitter = JitterBuffer(codec, min_delay_ms=min_delay_ms, max_delay_ms=max_delay_ms)
        self.rtcp = RtcpSession(self._sender.ssrc, codec.clock_rate, cname)
        self._rtcp_remote: Address | None = None  # latched from the peer's RTCP
        self._dtmf_in = DtmfReceiver()
        self._dtmf_out = DtmfSender(codec.clock_rate)
        self._digits_sent = trio.Event()
        self._digits_sent.set()
        self._units = codec.clock_rate * FRAME_MS // 1000  # timestamp units per tick
        self._silence = silence(codec.sample_rate)
        self._latched = False
        self._ticks = 0
        #: On hold (the peer's offer was sendonly or inactive): we send nothing.
        self.held = False
        self._talking = False
        self._heard_anything = False
        send, self.inbound = trio.open_memory_channel[bytes](INBOUND_QUEUE)
        self._inbound_send = send

    @property
    def local_port(self) -> int:
        return self._sockets.port

    @property
    def stats(self) -> JitterStats:
        """The receive side's playout counters (delay, loss, late, concealed)."""
        return self._jitter.stats

    def summary(self) -> str:
        """One line for the call's end: our playout, and what the peer's reports said."""
        jitter, peer = self._jitter.stats, self.rtcp.peer
        line = (f"received {jitter.received} packets, lost {jitter.lost}, late {jitter.late}, "
                f"concealed {jitter.concealed} frames, jitter buffer {jitter.delay_ms:.0f}/{jitter.target_ms:.0f} ms, "
                f"arrival jitter {self.rtcp.reception.jitter_ms:.1f} ms")
        if peer.reports:
            rtt = "?" if peer.round_trip_ms is None else f"{peer.round_trip_ms:.0f}"
            line += (f"; the peer reports {100 * peer.fraction_lost:.1f}% lost, jitter {peer.jitter_ms:.1f} ms, "
                     f"round trip {rtt} ms")
        return line

    def retarget(self, remote: Address) -> None:
        """A new offer moved the peer's media: send there, and latch afresh."""
        if remote != self.remote:
            self.remote = remote
            self._latched = False
            self._rtcp_remote = None

    @property
    def payload_type(self) -> int:
        return self._payload_type

    def change_codec(self, codec: Codec, payload_type: int) -> None:
        """A re-INVITE moved the call to another codec of the same rates (PCMU <-> PCMA).

        The timestamp and sequence go on: it is the same stream (RFC 3550 section 5.1).
        Packets of the old payload type still in flight are dropped on arrival.
        """
        if (codec.clock_rate, codec.sample_rate) != (self.codec.clock_rate, self.codec.sample_rate):
            raise ValueError(f"cannot move a {self.codec.rtpmap} call to {codec.rtpmap}")
        self.codec = codec
        self._encoder = codec.transcoder()
        self._jitter.change_codec(codec)
        self._payload_type = self._sender.payload_type = payload_type

    async def send_digits(self, digits: str, duration_ms: int = DEFAULT_DURATION_MS) -> bool:
        """Send RFC 4733 key presses in place of audio on the coming ticks, and return once
        the last end packet is out; False at once when the SDP agreed no telephone-event
        or the caller has put us on hold (nothing would be sent). Agent audio the pacer
        hands over meanwhile is not sent: a key press and speech cannot share the stream."""
        if self.event_payload_type is None or self.held:
            return False
        self._dtmf_out.send(digits, duration_ms)
        if self._digits_sent.is_set():
            self._digits_sent = trio.Event()
        await self._digits_sent.wait()
        return True

    async def tick(self, frame: bytes | None) -> None:
        """One whole 20 ms tick: :meth:`send`, then :meth:`receive`."""
        await self.send(frame)
        self.receive()

    async def send(self, frame: bytes | None) -> None:
        """The tick's first half, the pacer's sink: send ``frame`` (None: nothing, a
        silence) or a DTMF event packet in its place. A server runs every call's first
        half before any second half, so that no call's receive work delays another
        call's packet."""
        datagram = None if self.held else self._next_datagram(frame, trio.current_time())
        if datagram is not None:
            self._send(self._sockets.rtp, datagram, self.remote)

    def receive(self) -> None:
        """The tick's second half: read what arrived, play out one frame towards the
        dialog, and send an RTCP report when one is due."""
        now = trio.current_time()
        unix_offset = time.time() - now  # kernel timestamps are Unix time
        self._receive(now, unix_offset)
        self._ticks += 1
        if self._ticks % RTCP_READ_TICKS == 0:
            self._receive_rtcp(now, unix_offset)
        if now >= self.rtcp.next_report and self.remote[1]:  # port 0: no peer address yet
            self._send(self._sockets.rtcp, self.rtcp.report(now, now + unix_offset), self._rtcp_target())
        self._play_out()

    def _receive(self, now: float, unix_offset: float) -> None:
        for data, source, arrival in _datagrams(self._sockets.rtp):
            try:
                packet = parse_rtp(data)
            except RtpError as exc:
                log.debug("ignored datagram from %s:%d: %s", source[0], source[1], exc)
                continue
            self._accept(packet, source, now if arrival is None else arrival - unix_offset)

    def _accept(self, packet: RtpPacket, source: Address, arrival: float) -> None:
        is_event = packet.payload_type == self.event_payload_type
        if packet.payload_type != self._payload_type and not is_event:
            return  # comfort noise, or a type the SDP did not agree
        if not self._latched:
            self._latched = True
            if source != self.remote:
                log.info("RTP latched to %s:%d (SDP said %s:%d)", *source, *self.remote)
                self.remote = source
        elif source != self.remote:
            return  # RFC 4961 symmetric RTP: one peer per stream once latched
        self.rtcp.on_received(packet.ssrc, packet.sequence, packet.timestamp, arrival)
        if is_event:
            digit = self._dtmf_in.push(packet)
            if digit is not None and self.on_digit is not None:
                self.on_digit(digit)
            return
        self._heard_anything = True
        self._jitter.push(packet, arrival)

    def _receive_rtcp(self, now: float, unix_offset: float) -> None:
        for data, source, arrival in _datagrams(self._sockets.rtcp):
            if source[0] != self.remote[0]:
                continue  # only the media peer's host reports on this stream
            wallclock = now + unix_offset if arrival is None else arrival  # RTT needs the real arrival
            try:
                self.rtcp.receive(data, wallclock - unix_offset, wallclock)
            except RtcpError as exc:
                log.debug("ignored RTCP from %s:%d: %s", source[0], source[1], exc)
                continue
            self._rtcp_remote = source

    def _rtcp_target(self) -> Address:
        """Where the peer's RTCP comes from, else RTP's port + 1 (RFC 3550 section 11)."""
        return self._rtcp_remote or (self.remote[0], self.remote[1] + 1)

    def _next_datagram(self, frame: bytes | None, now: float) -> bytes | None:
        sender = self._sender
        event = self._dtmf_out.tick(sender.timestamp) if self.event_payload_type is not None else None
        if not self._dtmf_out.busy:
            self._digits_sent.set()
        if event is not None:
            assert self.event_payload_type is not None
            datagram = sender.event(self.event_payload_type, event.timestamp, event.payload, marker=event.marker)
            sender.skip(self._units)
            self._talking = False  # audio after the event starts a new talk-spurt
            return datagram
        if frame is None:
            sender.skip(self._units)
            self._talking = False
            return None
        timestamp = sender.timestamp
        payload = self._encoder.encode(frame)
        # RFC 3551 section 4.1: the marker bit flags the first packet of a talkspurt.
        datagram = sender.packet(payload, self._units, marker=not self._talking)
        self.rtcp.on_sent(len(payload), timestamp, now)
        self._talking = True
        return datagram

    def _send(self, sock: socket.socket, datagram: bytes, target: Address) -> None:
        try:
            sock.sendto(datagram, target)
        except OSError as exc:  # a full buffer (UDP: the packet is lost), ICMP errors
            log.debug("send to %s:%d failed: %s", *target, exc)

    def _play_out(self) -> None:
        if not self._heard_anything:
            return
        pcm = self._jitter.pop()
        try:
            self._inbound_send.send_nowait(self._silence if pcm is None else pcm)
        except trio.WouldBlock:
            log.debug("dialog is behind; dropped a caller frame")

    def close(self) -> None:
        self._sockets.close()
