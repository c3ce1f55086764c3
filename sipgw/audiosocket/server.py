"""Asterisk AudioSocket over TCP: the thin Trio adapter around ``protocol.Connection``.

Facts from a real Asterisk 22 that shape this file:
- audio frames follow the caller's packet time (320 bytes at 20 ms, 480 at 30 ms), so
  inbound audio is re-cut into 20 ms frames here and no size is assumed;
- when the caller hangs up, Asterisk closes the connection without a hangup frame;
- a hangup frame from us makes Asterisk hang up the caller;
- the AudioSocket application drops a call after about 2 s without frames, so the pacer
  sends a 20 ms frame every tick, silence included.
A malformed or oversized frame ends that connection only, with a log line.
"""

from __future__ import annotations

import logging

import trio

from dialog.leg import DIGIT_QUEUE
from media.audio import frame_bytes, silence
from media.pacer import Pacer

from ..calls import Calls
from ..config import HostPort
from ..errors import ListenError
from .protocol import (
    CLOSED,
    NEED_DATA,
    Audio,
    AudioSocketError,
    Connection,
    Dtmf,
    Error,
    Event,
    Hangup,
    Signal,
    Uuid,
)
from .wire import Bridge, WireFormat, detect

log = logging.getLogger("trivox.audiosocket")

#: Asterisk sends the UUID frame first, at once; a peer that does not is not Asterisk.
UUID_TIMEOUT = 5.0
#: Audio follows the UUID at once; without any by then, the wire is taken as slin 8 kHz.
FIRST_AUDIO_TIMEOUT = 1.0
DEFAULT_WIRE = WireFormat("slin", 8000)
READ_SIZE = 4096
INBOUND_QUEUE = 250
#: Agent frames waiting for a slow connection (1 s) before more are dropped.
OUTBOX_FRAMES = 50


class AudioSocketLeg:
    """One AudioSocket connection as the dialog sees it."""

    def __init__(self, stream: trio.SocketStream, connection: Connection, call_id: str, peer: str,
                 wire: WireFormat = DEFAULT_WIRE, first: Event | None = None) -> None:
        """``wire``: the audio format the first message showed; ``first``: that message,
        read before the call started, handled first by :meth:`read_loop`."""
        self.call_id = call_id
        self.caller = peer
        self.wire = wire
        self._bridge = Bridge(wire)
        self.sample_rate = self._bridge.call_rate
        self.pacer = Pacer(self.sample_rate)
        self.end_reason = ""
        self.cancel_scope: trio.CancelScope | None = None
        send, self.inbound = trio.open_memory_channel[bytes](INBOUND_QUEUE)
        self._inbound_send = send
        self._digit_send, self.digits = trio.open_memory_channel[str](DIGIT_QUEUE)
        self._stream = stream
        self._connection = connection
        self._pending = b""
        self._frame = frame_bytes(self.sample_rate)
        self._silence = silence(self.sample_rate)
        self._send_lock = trio.Lock()
        self._outbox_send, self._outbox = trio.open_memory_channel[bytes](OUTBOX_FRAMES)
        self._closed = False
        self._first = first
        self._warned_rate = False

    async def answer(self) -> None:
        """Asterisk answered before it connected to us: nothing to do."""

    async def hangup(self) -> None:
        self.end_reason = self.end_reason or "trivox hung up"
        await self._send(self._connection.send(Hangup()))
        await self.close()

    async def transfer(self, target: str) -> bool:
        """AudioSocket has no way to ask Asterisk for a transfer: say so and go on."""
        log.warning("cannot transfer to %s: AudioSocket has no transfer (use SIP, or hang up "
                    "and let the dialplan continue)", target)
        return False

    async def send_digits(self, digits: str) -> bool:
        """AudioSocket carries DTMF from Asterisk only: say so and go on."""
        log.warning("cannot send DTMF %s: AudioSocket has no way to send digits to Asterisk", digits)
        return False

    async def pacer_sink(self, frame: bytes | None) -> None:
        """Hands the frame to :meth:`write_loop` without waiting: the media clock's task
        calls this, and a slow TCP peer must not hold up other calls."""
        wire = self._bridge.outbound(self._silence if frame is None else frame)
        try:
            self._outbox_send.send_nowait(self._connection.send(Audio(wire, self.wire.rate)))
        except trio.WouldBlock:
            log.debug("Asterisk is not reading; dropped an agent frame")

    def receive_tick(self) -> None:
        """Nothing: AudioSocket audio is read by :meth:`read_loop` as it comes."""

    async def write_loop(self) -> None:
        """Agent audio out, in order, as fast as the connection takes it."""
        async for data in self._outbox:
            await self._send(data)

    async def read_loop(self) -> None:
        """Frames from Asterisk until it closes, hangs up, or sends garbage."""
        try:
            while True:
                event, self._first = self._first or self._connection.next_event(), None
                if event is NEED_DATA:
                    self._connection.receive_data(await self._stream.receive_some(READ_SIZE))
                    continue
                if event is CLOSED:
                    self._end("the caller hung up (connection closed)")
                    return
                if isinstance(event, Audio) and event.rate == self.wire.rate:
                    self._audio(self._bridge.inbound(event.pcm))
                elif isinstance(event, Audio):
                    if not self._warned_rate:
                        log.warning("ignoring %d Hz audio in a call that started as %s", event.rate, self.wire)
                        self._warned_rate = True
                elif isinstance(event, Hangup):
                    self._end("the caller hung up")
                    return
                elif isinstance(event, Dtmf):
                    log.info("DTMF %s", event.digit)
                    try:
                        self._digit_send.send_nowait(event.digit)
                    except trio.WouldBlock:
                        log.warning("dialog is not reading DTMF; dropped %s", event.digit)
                elif isinstance(event, Error):
                    log.warning("Asterisk reported an error (code %s)", event.code)
                elif isinstance(event, Uuid):
                    log.warning("ignored a second UUID frame")
        except AudioSocketError as exc:
            log.warning("malformed AudioSocket frame, closing the connection: %s", exc)
            self._end(f"protocol error: {exc}")
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError) as exc:
            self._end(f"connection lost: {exc}")

    def _audio(self, pcm: bytes) -> None:
        """Re-cut Asterisk's frames (any packet time, resampled) into our 20 ms frames."""
        self._pending += pcm
        while len(self._pending) >= self._frame:
            frame, self._pending = self._pending[:self._frame], self._pending[self._frame:]
            try:
                self._inbound_send.send_nowait(frame)
            except trio.WouldBlock:
                log.debug("dialog is behind; dropped a caller frame")

    def _end(self, reason: str) -> None:
        self.end_reason = self.end_reason or reason
        if self.cancel_scope is not None:
            self.cancel_scope.cancel()

    async def _send(self, data: bytes) -> None:
        if self._closed:
            return
        async with self._send_lock:
            try:
                await self._stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                self._end("connection lost")

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            with trio.CancelScope(shield=True):
                await self._stream.aclose()


async def serve_audiosocket(listen: HostPort, calls: Calls, calls_nursery: trio.Nursery, *, g711_law: str = "auto",
                            task_status: trio.TaskStatus[tuple[str, int]] = trio.TASK_STATUS_IGNORED) -> None:
    """Accept AudioSocket connections; each one becomes a call in the calls nursery."""
    try:
        listeners = await trio.open_tcp_listeners(listen.port, host=listen.host or None)
    except OSError as exc:
        raise ListenError(f"cannot listen for AudioSocket on tcp {listen}: {exc.strerror}") from None
    address = listeners[0].socket.getsockname()
    task_status.started((address[0], address[1]))

    async def handle(stream: trio.SocketStream) -> None:
        await _connection(stream, calls, g711_law)

    await trio.serve_listeners(handle, listeners, handler_nursery=calls_nursery)


async def _connection(stream: trio.SocketStream, calls: Calls, g711_law: str) -> None:
    peer = _peer(stream)
    connection = Connection()
    try:
        with trio.fail_after(UUID_TIMEOUT):
            event = await _next_event(stream, connection)
    except (AudioSocketError, trio.TooSlowError, trio.BrokenResourceError, ConnectionError) as exc:
        log.warning("AudioSocket connection from %s closed before its UUID: %s", peer, exc or "timeout")
        await stream.aclose()
        return
    if not isinstance(event, Uuid):
        log.warning("AudioSocket connection from %s did not start with a UUID frame; closing", peer)
        await stream.aclose()
        return
    wire, first = DEFAULT_WIRE, None
    try:
        with trio.move_on_after(FIRST_AUDIO_TIMEOUT):
            first = await _next_event(stream, connection)
        if isinstance(first, Audio):
            wire = detect(first.pcm, first.rate, g711_law)
    except AudioSocketError as exc:
        log.warning("malformed AudioSocket frame from %s, closing the connection: %s", peer, exc)
        await stream.aclose()
        return
    except (trio.BrokenResourceError, ConnectionError) as exc:
        log.warning("AudioSocket connection from %s lost after its UUID: %s", peer, exc)
        await stream.aclose()
        return
    if wire != DEFAULT_WIRE:
        log.info("AudioSocket %s from %s carries %s; the call runs at %d Hz", event.value, peer, wire, wire.call_rate)
    leg = AudioSocketLeg(stream, connection, str(event.value), peer, wire, first)
    try:
        await calls.run(leg, [leg.read_loop, leg.write_loop])
    finally:
        await leg.close()


async def _next_event(stream: trio.SocketStream, connection: Connection) -> Event | Signal:
    """The connection's next event (or CLOSED), reading as much as that takes."""
    while (event := connection.next_event()) is NEED_DATA:
        connection.receive_data(await stream.receive_some(READ_SIZE))
    return event


def _peer(stream: trio.SocketStream) -> str:
    try:
        host, port = stream.socket.getpeername()[:2]
    except OSError:
        return "unknown"
    return f"{host}:{port}"

