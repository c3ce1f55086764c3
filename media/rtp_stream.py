"""One call's RTP over UDP: the thin Trio adapter around the sans-IO RTP pieces.

Symmetric RTP (RFC 4961): we send from the port we receive on, one port per call. We
send to the address the SDP gave until the first valid packet arrives, then to that
packet's source (latching), which is what gets media through a NAT.

There is one clock per call: the pacer's 20 ms tick. Each tick sends our next frame (or
nothing, in a silence; or an RFC 4733 event packet while a key press is being sent) and
plays out one frame from the jitter buffer towards the dialog, so the send and receive
sides never drift apart. Frames are 20 ms at the codec's sample rate (16 kHz for G.722
and L16), and the RTP timestamp moves on the codec's clock.
"""

from __future__ import annotations

import errno
import logging
import random
from collections.abc import Callable

import trio

from .audio import FRAME_MS, silence
from .codecs import Codec
from .dtmf import DEFAULT_DURATION_MS, DtmfReceiver, DtmfSender
from .jitter import DEFAULT_MAX_DELAY_MS, DEFAULT_MIN_DELAY_MS, JitterBuffer, JitterStats
from .rtp import RtpError, RtpSender, parse_rtp

log = logging.getLogger("trivox.rtp")

Address = tuple[str, int]

#: Larger than any RTP packet we accept (a 60 ms G.711 frame is 492 bytes).
MAX_DATAGRAM = 2048
#: Inbound frames that may wait for the dialog's ears (5 s) before we drop.
INBOUND_QUEUE = 250
#: Ports tried before giving up on the configured range.
BIND_ATTEMPTS = 100


async def open_rtp_socket(host: str, port_min: int, port_max: int) -> trio.socket.SocketType:
    """Bind a UDP socket on a free even port in [port_min, port_max] (RFC 3550 section 11)."""
    family = trio.socket.AF_INET6 if ":" in host else trio.socket.AF_INET
    evens = range(port_min + port_min % 2, port_max + 1, 2)
    for port in random.sample(evens, min(BIND_ATTEMPTS, len(evens))):
        sock = trio.socket.socket(family, trio.socket.SOCK_DGRAM)
        try:
            await sock.bind((host, port))
        except OSError as exc:
            sock.close()
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                continue
            raise
        return sock
    raise OSError(errno.EADDRINUSE, f"no free RTP port in {port_min}-{port_max}")


class RtpStream:
    """Send and receive one RTP stream of one codec, with RFC 4733 events both ways."""

    def __init__(self, sock: trio.socket.SocketType, codec: Codec, remote: Address,
                 *, payload_type: int | None = None, event_payload_type: int | None = None,
                 min_delay_ms: int = DEFAULT_MIN_DELAY_MS, max_delay_ms: int = DEFAULT_MAX_DELAY_MS) -> None:
        """``event_payload_type``: the RFC 4733 telephone-event type the SDP agreed; its
        digits go to ``on_digit``, and :meth:`send_digits` needs it."""
        self.codec = codec
        self.event_payload_type = event_payload_type
        self.on_digit: Callable[[str], None] | None = None
        self.remote = remote
        self._sock = sock
        self._payload_type = codec.payload_type if payload_type is None else payload_type
        self._encoder = codec.transcoder()
        self._sender = RtpSender(self._payload_type, codec.clock_rate)
        self._jitter = JitterBuffer(codec, min_delay_ms=min_delay_ms, max_delay_ms=max_delay_ms)
        self._dtmf_in = DtmfReceiver()
        self._dtmf_out = DtmfSender(codec.clock_rate)
        self._digits_sent = trio.Event()
        self._digits_sent.set()
        self._units = codec.clock_rate * FRAME_MS // 1000  # timestamp units per tick
        self._silence = silence(codec.sample_rate)
        self._latched = False
        #: On hold (the peer's offer was sendonly or inactive): we send nothing.
        self.held = False
        self._talking = False
        self._heard_anything = False
        send, self.inbound = trio.open_memory_channel[bytes](INBOUND_QUEUE)
        self._inbound_send = send

    @property
    def local_port(self) -> int:
        return self._sock.getsockname()[1]

    @property
    def stats(self) -> JitterStats:
        """The receive side's playout counters (delay, loss, late, concealed)."""
        return self._jitter.stats

    def retarget(self, remote: Address) -> None:
        """A new offer moved the peer's media: send there, and latch afresh."""
        if remote != self.remote:
            self.remote = remote
            self._latched = False

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
        the last end packet is out; False at once when the SDP agreed no telephone-event.
        Agent audio the pacer hands over meanwhile is not sent: a key press and speech
        cannot share the one stream."""
        if self.event_payload_type is None:
            return False
        self._dtmf_out.send(digits, duration_ms)
        if self._digits_sent.is_set():
            self._digits_sent = trio.Event()
        await self._digits_sent.wait()
        return True

    async def receive_loop(self) -> None:
        """Read datagrams into the jitter buffer until cancelled."""
        while True:
            data, source = await self._sock.recvfrom(MAX_DATAGRAM)
            try:
                packet = parse_rtp(data)
            except RtpError as exc:
                log.debug("ignored datagram from %s:%d: %s", source[0], source[1], exc)
                continue
            is_event = packet.payload_type == self.event_payload_type
            if packet.payload_type != self._payload_type and not is_event:
                continue  # comfort noise, or a type the SDP did not agree
            source = (source[0], source[1])
            if not self._latched:
                self._latched = True
                if source != self.remote:
                    log.info("RTP latched to %s:%d (SDP said %s:%d)", *source, *self.remote)
                    self.remote = source
            elif source != self.remote:
                continue  # RFC 4961 symmetric RTP: one peer per stream once latched
            if is_event:
                digit = self._dtmf_in.push(packet)
                if digit is not None and self.on_digit is not None:
                    self.on_digit(digit)
                continue
            self._heard_anything = True
            self._jitter.push(packet, trio.current_time())

    async def tick(self, frame: bytes | None) -> None:
        """The pacer's sink: send ``frame`` (None: nothing, a silence) or a DTMF event
        packet in its place, and play out one frame."""
        datagram = None if self.held else self._next_datagram(frame)
        if datagram is not None:
            try:
                await self._sock.sendto(datagram, self.remote)
            except OSError as exc:  # ICMP unreachable from an earlier send, full buffer
                log.debug("RTP send to %s:%d failed: %s", *self.remote, exc)
        self._play_out()

    def _next_datagram(self, frame: bytes | None) -> bytes | None:
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
        # RFC 3551 section 4.1: the marker bit flags the first packet of a talkspurt.
        datagram = sender.packet(self._encoder.encode(frame), self._units, marker=not self._talking)
        self._talking = True
        return datagram

    def _play_out(self) -> None:
        if not self._heard_anything:
            return
        pcm = self._jitter.pop()
        try:
            self._inbound_send.send_nowait(self._silence if pcm is None else pcm)
        except trio.WouldBlock:
            log.debug("dialog is behind; dropped a caller frame")

    def close(self) -> None:
        self._sock.close()
