"""One call's RTP over UDP: the thin Trio adapter around the sans-IO RTP pieces.

Symmetric RTP (RFC 4961): we send from the port we receive on, one port per call. We
send to the address the SDP gave until the first valid packet arrives, then to that
packet's source (latching), which is what gets media through a NAT.

There is one clock per call: the pacer's 20 ms tick. Each tick sends our next frame (or
nothing, in a silence) and plays out one frame from the jitter buffer towards the
dialog, so the send and receive sides never drift apart.
"""

from __future__ import annotations

import errno
import logging
import random
from collections.abc import Callable

import trio

from .audio import frame_samples, silence
from .dtmf import DtmfReceiver
from .g711 import Codec
from .jitter import JitterBuffer
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
    """Send and receive one RTP stream of one codec."""

    def __init__(self, sock: trio.socket.SocketType, codec: Codec, remote: Address,
                 *, payload_type: int | None = None, jitter_depth: int = 3,
                 event_payload_type: int | None = None) -> None:
        """``event_payload_type``: the RFC 4733 telephone-event type the SDP agreed; its
        digits go to ``on_digit``."""
        self.codec = codec
        self.event_payload_type = event_payload_type
        self.on_digit: Callable[[str], None] | None = None
        self._dtmf = DtmfReceiver()
        self.remote = remote
        self._sock = sock
        self._payload_type = codec.payload_type if payload_type is None else payload_type
        self._sender = RtpSender(self._payload_type, codec.clock_rate)
        self._jitter = JitterBuffer(depth=jitter_depth)
        self._samples = frame_samples(codec.clock_rate)
        self._silence = silence(codec.clock_rate)
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

    def retarget(self, remote: Address) -> None:
        """A new offer moved the peer's media: send there, and latch afresh."""
        if remote != self.remote:
            self.remote = remote
            self._latched = False

    @property
    def payload_type(self) -> int:
        return self._payload_type

    def change_codec(self, codec: Codec, payload_type: int) -> None:
        """A re-INVITE moved the call to another codec of the same clock rate (PCMU <-> PCMA).

        The timestamp and sequence go on: it is the same stream (RFC 3550 section 5.1).
        Packets of the old payload type still in flight are dropped on arrival.
        """
        if codec.clock_rate != self.codec.clock_rate:
            raise ValueError(f"cannot move a {self.codec.clock_rate} Hz call to {codec.name}/{codec.clock_rate}")
        self.codec = codec
        self._payload_type = self._sender.payload_type = payload_type

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
                digit = self._dtmf.push(packet)
                if digit is not None and self.on_digit is not None:
                    self.on_digit(digit)
                continue
            self._heard_anything = True
            self._jitter.push(packet)

    async def tick(self, frame: bytes | None) -> None:
        """The pacer's sink: send ``frame`` (None: nothing, a silence) and play out one frame."""
        if frame is None or self.held:
            self._sender.skip(self._samples)
            self._talking = False
        else:
            # RFC 3551 section 4.1: the marker bit flags the first packet of a talkspurt.
            datagram = self._sender.packet(self.codec.encode(frame), self._samples, marker=not self._talking)
            self._talking = True
            try:
                await self._sock.sendto(datagram, self.remote)
            except OSError as exc:  # ICMP unreachable from an earlier send, full buffer
                log.debug("RTP send to %s:%d failed: %s", *self.remote, exc)
        self._play_out()

    def _play_out(self) -> None:
        if not self._heard_anything:
            return
        packet = self._jitter.pop()
        # A lost or late frame is silence for now; concealment comes with the adaptive buffer.
        pcm = self._silence if packet is None else self.codec.decode(packet.payload)
        try:
            self._inbound_send.send_nowait(pcm)
        except trio.WouldBlock:
            log.debug("dialog is behind; dropped a caller frame")

    def close(self) -> None:
        self._sock.close()
