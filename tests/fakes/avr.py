"""Fake AVR connectors on loopback: an STS connector (trio-websocket) and the three HTTP
services (Trio + h11), speaking the shapes of providers/avr/protocol.py as AVR's own
servers do, recording what they received, and scriptable.

The STS fake runs a test's script per connection; the script sees a FakeStsCall with
what the client sent so far and sends what a connector would: audio in 20 ms frames,
``interruption``, ``transcript``, ``error``, a proper close, or a dead drop of the TCP
connection (no closing handshake, as a crashed connector does).

The HTTP fake answers like the Node services do: ASR segments as one chunk each, either
as soon as audio arrives (avr-asr-vosk writes when its endpointer fires) or after the
body; LLM reply chunks written as given; TTS audio in 320-byte chunks (avr-tts-deepgram,
avr-tts-kokoro); an error status with ``{"message": ...}``; or an answer held open
until the client leaves.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import h11
import trio
import trio_websocket

#: Bytes of one 20 ms frame at 8 kHz s16le: what the connectors send per message.
FRAME_BYTES = 320
RECEIVE_BYTES = 65536

ASR_PATH = "/speech-to-text-stream"
LLM_PATH = "/prompt-stream"
TTS_PATH = "/text-to-speech-stream"


# --- STS ------------------------------------------------------------------------------


class _KeepingListener(trio.abc.Listener[trio.SocketStream]):
    """A TCP listener that keeps every stream it accepts, so a call can be dropped dead."""

    def __init__(self, inner: trio.SocketListener) -> None:
        self.inner = inner
        #: By the client's port (every client is on loopback).
        self.streams: dict[int, trio.SocketStream] = {}

    async def accept(self) -> trio.SocketStream:
        stream = await self.inner.accept()
        self.streams[stream.socket.getpeername()[1]] = stream
        return stream

    async def aclose(self) -> None:
        await self.inner.aclose()


class FakeStsCall:
    """One client connection, as the script sees it."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, stream: trio.SocketStream) -> None:
        self._ws = ws
        self._stream = stream
        #: Every message the client sent, in order, parsed.
        self.messages: list[dict[str, Any]] = []
        #: The caller audio of every ``audio`` message, decoded, concatenated.
        self.caller_audio = bytearray()
        #: Set when the connection is over, from either side; ``close_code`` says how.
        self.closed = trio.Event()
        self.close_code: int | None = None
        self._changed = trio.Event()

    async def until(self, ready: Callable[[FakeStsCall], bool]) -> None:
        """Wait until ``ready(self)``, re-checked after every message and at the close."""
        while not ready(self):
            if self.closed.is_set():
                raise AssertionError("the client closed before the fake saw what it waited for")
            await self._changed.wait()

    async def send(self, message: dict[str, Any]) -> None:
        await self._ws.send_message(json.dumps(message))

    async def send_audio(self, pcm: bytes) -> None:
        """Agent audio as the connectors send it: one 20 ms frame per message."""
        for i in range(0, len(pcm), FRAME_BYTES):
            await self.send({"type": "audio", "audio": base64.b64encode(pcm[i:i + FRAME_BYTES]).decode()})

    async def interrupt(self) -> None:
        await self.send({"type": "interruption"})

    async def transcript(self, role: str, text: str) -> None:
        await self.send({"type": "transcript", "role": role, "text": text})

    async def error(self, message: str) -> None:
        await self.send({"type": "error", "message": message})

    async def close(self, code: int = 1000) -> None:
        await self._ws.aclose(code)

    async def drop(self) -> None:
        """Close the TCP connection with no closing handshake."""
        await self._stream.aclose()

    async def _read(self) -> None:
        while True:
            try:
                message = await self._ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                self.close_code = exc.reason.code
                self.closed.set()
                self._notify()
                return
            parsed = json.loads(message)
            self.messages.append(parsed)
            if parsed.get("type") == "audio":
                self.caller_audio += base64.b64decode(parsed["audio"])
            self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


async def wait_for_init(call: FakeStsCall) -> None:
    """The default script: wait for the client's first message, then just listen."""
    await call.until(lambda c: bool(c.messages))


class FakeAvrSts:
    """An AVR STS connector; ``script`` runs once per connection, then the fake listens on
    until the connection closes."""

    def __init__(self, script: Callable[[FakeStsCall], Awaitable[None]] = wait_for_init) -> None:
        self.script = script
        self.calls: list[FakeStsCall] = []
        #: Set once the first call has been accepted.
        self.connected = trio.Event()
        self.url = ""
        self._listener: _KeepingListener | None = None

    async def serve(self, *, task_status: trio.TaskStatus[FakeAvrSts] = trio.TASK_STATUS_IGNORED) -> None:
        [inner] = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self._listener = _KeepingListener(inner)
        self.url = f"ws://127.0.0.1:{inner.socket.getsockname()[1]}"
        server = trio_websocket.WebSocketServer(self._handle, [self._listener])  # type: ignore[list-item]
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            task_status.started(self)

    async def _handle(self, request: trio_websocket.WebSocketRequest) -> None:
        assert self._listener is not None
        ws = await request.accept()
        remote = ws.remote
        assert isinstance(remote, trio_websocket.Endpoint)
        call = FakeStsCall(ws, self._listener.streams[remote.port])
        self.calls.append(call)
        self.connected.set()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call._read)
            await self.script(call)
            await call.closed.wait()


# --- HTTP -----------------------------------------------------------------------------


@dataclass
class Exchange:
    """One request the HTTP fake received, and how it went."""

    method: str
    path: str
    #: Header names lower-cased.
    headers: dict[str, str]
    body: bytearray = field(default_factory=bytearray)
    #: The client sent its whole body.
    complete: bool = False
    #: The client went away before the exchange was over (mid-body or mid-answer).
    disconnected: bool = False
    #: Set when the fake is done with the exchange.
    ended: trio.Event = field(default_factory=trio.Event)

    def json(self) -> Any:
        return json.loads(self.body)


class _Gone(Exception):
    """The client closed the connection."""


class _ServerSide:
    """h11 and a stream: the fake's half of one connection."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.http = h11.Connection(h11.SERVER)

    async def next_event(self) -> Any:
        while True:
            try:
                event = self.http.next_event()
            except h11.RemoteProtocolError:
                raise _Gone from None
            if event is h11.NEED_DATA:
                try:
                    self.http.receive_data(await self.stream.receive_some(RECEIVE_BYTES))
                except trio.BrokenResourceError:
                    raise _Gone from None
                continue
            if isinstance(event, h11.ConnectionClosed):
                raise _Gone
            return event

    async def send(self, event: Any) -> None:
        try:
            await self.stream.send_all(self.http.send(event))
        except trio.BrokenResourceError:
            raise _Gone from None

    async def start_answer(self, status: int, content_type: str) -> None:
        await self.send(h11.Response(status_code=status, headers=[
            ("Content-Type", content_type), ("Transfer-Encoding", "chunked"), ("Connection", "close")]))

    async def chunks(self, chunks: list[bytes]) -> None:
        for chunk in chunks:
            await self.send(h11.Data(data=chunk))

    async def wait_for_client_to_leave(self) -> None:
        while await self.stream.receive_some(RECEIVE_BYTES):
            pass


class FakeAvrHttp:
    """The three AVR HTTP services on one port; set what they answer before a test calls."""

    def __init__(self) -> None:
        #: ASR: the transcript segments, one chunk each.
        self.transcripts: list[str] = []
        #: ASR: write them once audio arrives (True) or once the body has ended (False).
        self.transcripts_early = False
        #: LLM: the reply body, one chunk per item.
        self.reply_chunks: list[bytes] = []
        #: TTS: the audio body, in ``audio_chunk``-byte chunks.
        self.audio = b""
        self.audio_chunk = FRAME_BYTES
        #: path -> (status, body): answer that instead, once the request's body is read.
        self.failures: dict[str, tuple[int, bytes]] = {}
        #: After the answer's chunks, keep it open until the client leaves.
        self.hold = False
        self.exchanges: list[Exchange] = []
        self.url = ""

    async def serve(self, *, task_status: trio.TaskStatus[FakeAvrHttp] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._handle, listeners)
            task_status.started(self)

    async def _handle(self, stream: trio.SocketStream) -> None:
        side = _ServerSide(stream)
        exchange: Exchange | None = None
        try:
            request = await side.next_event()
            exchange = Exchange(request.method.decode(), request.target.decode().split("?")[0],
                                {name.decode().lower(): value.decode() for name, value in request.headers})
            self.exchanges.append(exchange)
            if exchange.path in self.failures:
                status, body = self.failures[exchange.path]
                await self._read_body(side, exchange)
                await side.start_answer(status, "application/json")
                await side.chunks([body])
                await side.send(h11.EndOfMessage())
            elif exchange.path == ASR_PATH:
                await self._asr(side, exchange)
            elif exchange.path in (LLM_PATH, TTS_PATH):
                await self._read_body(side, exchange)
                if exchange.path == LLM_PATH:
                    await side.start_answer(200, "text/event-stream")
                    await side.chunks(self.reply_chunks)
                else:
                    await side.start_answer(200, "audio/l16")
                    await side.chunks([self.audio[i:i + self.audio_chunk]
                                       for i in range(0, len(self.audio), self.audio_chunk)])
                if self.hold:
                    await side.wait_for_client_to_leave()
                    raise _Gone
                await side.send(h11.EndOfMessage())
            else:
                await self._read_body(side, exchange)
                await side.start_answer(404, "text/plain")
                await side.send(h11.EndOfMessage())
        except _Gone:
            if exchange is not None:
                exchange.disconnected = True
        finally:
            await stream.aclose()
            if exchange is not None:
                exchange.ended.set()

    async def _asr(self, side: _ServerSide, exchange: Exchange) -> None:
        answered = False
        while True:
            event = await side.next_event()
            if isinstance(event, h11.EndOfMessage):
                break
            exchange.body += event.data
            if self.transcripts_early and not answered:
                answered = True
                await side.start_answer(200, "text/event-stream")
                await side.chunks([text.encode() for text in self.transcripts])
        exchange.complete = True
        if not answered:
            await side.start_answer(200, "text/event-stream")
            await side.chunks([text.encode() for text in self.transcripts])
        await side.send(h11.EndOfMessage())

    async def _read_body(self, side: _ServerSide, exchange: Exchange) -> None:
        while not isinstance(event := await side.next_event(), h11.EndOfMessage):
            exchange.body += event.data
        exchange.complete = True
