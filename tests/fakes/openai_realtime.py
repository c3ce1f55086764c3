"""A fake OpenAI Realtime server on loopback: the real WebSocket protocol, scripted replies.

Started with ``base_url = await nursery.start(fake.serve)`` (``http://127.0.0.1:PORT/v1``,
what ``OpenAISettings.base_url`` takes). Every client event it receives is validated
against the ``openai`` package's pydantic models of that dialect (GA ``openai.types.realtime``,
or ``openai.types.beta.realtime`` when the handshake carries ``OpenAI-Beta: realtime=v1``),
with unknown fields refused as the real service refuses them, and so is every event it
sends: the wire shape is checked against the library, not against our own reading of it.
A client event that does not validate fails the test (an AssertionError in the server).

What it does, as the real service would:

- on connect: ``session.created``; on ``session.update``: ``session.updated`` (then the
  scripted ``error``, if any);
- ``input_audio_buffer.append``: records the decoded bytes; with turn detection on, once
  ``caller_turn_ms`` of audio is buffered, the caller's turn: speech started/stopped,
  committed, the caller's transcript, and the next scripted :class:`Reply`;
- ``input_audio_buffer.commit``: committed, the transcript (an error if the buffer holds
  under 100 ms); on a transcription session, interim deltas then ``completed``;
- ``response.create``: the next scripted reply (audio in the session's format, or a
  function call, after which it waits for ``function_call_output`` + ``response.create``);
- ``conversation.item.truncate``: recorded; past the end of the audio it sent of that
  item, the service's "already shorter than" error;
- ``response.cancel``: the "no active response" error (the fake's replies are sent whole).
"""

from __future__ import annotations

import base64
import json
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import numpy as np
import pydantic
import trio
import trio_websocket
from openai.types.beta.realtime import RealtimeClientEvent as PreviewClientEvent
from openai.types.beta.realtime import RealtimeServerEvent as PreviewServerEvent
from openai.types.realtime import RealtimeClientEvent, RealtimeServerEvent

from media.codecs import PCMU

GA_CLIENT = pydantic.TypeAdapter(RealtimeClientEvent)
GA_SERVER = pydantic.TypeAdapter(RealtimeServerEvent)
PREVIEW_CLIENT = pydantic.TypeAdapter(PreviewClientEvent)
PREVIEW_SERVER = pydantic.TypeAdapter(PreviewServerEvent)
#: The service refuses to commit less than this much audio.
MIN_COMMIT_MS = 100
TONE_HZ = 440
TONE_AMPLITUDE = 8000


@dataclass
class ToolScript:
    name: str
    arguments: str
    call_id: str = "call_1"


@dataclass
class Reply:
    """One response: ``audio_ms`` of agent speech (a tone) in ``chunks`` deltas, with its
    transcript; or a function call. ``interrupted_after``/``drop_after`` chunks: the
    caller barges in (server VAD cancels the reply), or the connection dies."""

    audio_ms: int = 0
    transcript: str = ""
    chunks: int = 3
    tool: ToolScript | None = None
    interrupted_after: int | None = None
    drop_after: int | None = None


@dataclass
class Connection:
    """What one client did on one WebSocket."""

    path: str
    query: dict[str, str]
    headers: dict[str, str]
    preview: bool
    events: list[dict[str, Any]] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)  # every append, decoded (wire format)
    truncates: list[tuple[str, int]] = field(default_factory=list)
    tool_outputs: list[tuple[str, str]] = field(default_factory=list)
    agent_audio: dict[str, bytearray] = field(default_factory=dict)  # item id -> wire audio sent
    closed: trio.Event = field(default_factory=trio.Event)
    close_code: int | None = None
    session: dict[str, Any] = field(default_factory=dict)
    buffered: int = 0  # appended bytes since the last commit
    pending_call: str | None = None  # a function call awaiting its output

    def types(self) -> list[str]:
        return [event["type"] for event in self.events]

    @property
    def transcription(self) -> bool:
        return self.query.get("intent") == "transcription"

    @property
    def pcmu(self) -> bool:
        if self.preview:
            return self.session.get("input_audio_format") == "g711_ulaw"
        return self.session["audio"]["input"]["format"]["type"] == "audio/pcmu"

    @property
    def rate(self) -> int:
        return 8000 if self.pcmu else 24000

    @property
    def bytes_per_ms(self) -> int:
        return self.rate // 1000 * (1 if self.pcmu else 2)

    @property
    def turn_detection(self) -> Any:
        if self.preview:
            return self.session.get("turn_detection")
        return self.session.get("audio", {}).get("input", {}).get("turn_detection")

    @property
    def input_transcription(self) -> Any:
        if self.preview:
            return self.session.get("input_audio_transcription")
        return self.session.get("audio", {}).get("input", {}).get("transcription")


class FakeRealtime:
    """Set the script (attributes) before the client connects; read ``connections`` after."""

    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        #: Buffered caller audio at which server VAD "hears" a whole caller turn.
        self.caller_turn_ms: int | None = None
        self.caller_transcript = "hello there"
        #: A transcription session's final text, and the interim deltas before it
        #: (None: its words).
        self.transcript = ""
        self.interim: list[str] | None = None
        #: Set: a commit on a transcription session is never answered, and this is set.
        self.stall: trio.Event | None = None
        #: The key the handshake must carry (None: any); a wrong one is refused with 401.
        self.api_key: str | None = None
        #: Sent after ``session.updated``: the ``error`` object of an error event.
        self.error: dict[str, Any] | None = None
        self.connections: list[Connection] = []
        self._ids = 0

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(trio_websocket.serve_websocket, self._handle, "127.0.0.1", 0, None)
            task_status.started(f"http://127.0.0.1:{server.port}/v1")

    @property
    def last(self) -> Connection:
        return self.connections[-1]

    # --- the connection --------------------------------------------------------------

    async def _handle(self, request: trio_websocket.WebSocketRequest) -> None:
        url = urlsplit(request.path)
        headers = {name.decode().lower(): value.decode() for name, value in request.headers}
        conn = Connection(url.path, dict(parse_qsl(url.query)), headers,
                          preview=headers.get("openai-beta") == "realtime=v1")
        self.connections.append(conn)
        if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
            body = {"error": {"type": "invalid_request_error", "code": "invalid_api_key",
                              "message": f"Incorrect API key provided: {headers.get('authorization', '')[7:]}"}}
            await request.reject(401, body=json.dumps(body).encode())
            conn.closed.set()
            return
        ws = await request.accept()
        try:
            initial = {"type": "transcription"} if conn.transcription else {"type": "realtime"}
            await self._send(ws, conn, {"type": "session.created",
                                        "session": {"id": "sess_1"} if conn.preview else initial})
            while True:
                event = json.loads(await ws.get_message())
                self._validate(conn, event)
                conn.events.append(event)
                await self._on_event(ws, conn, event)
        except trio_websocket.ConnectionClosed as exc:
            conn.close_code = exc.reason.code if exc.reason is not None else None
        finally:
            conn.closed.set()

    async def _on_event(self, ws: trio_websocket.WebSocketConnection, conn: Connection,
                        event: dict[str, Any]) -> None:
        kind = event["type"]
        if kind == "session.update":
            conn.session = event["session"]
            await self._send(ws, conn, {"type": "session.updated", "session": conn.session})
            if self.error is not None:
                await self._send(ws, conn, {"type": "error", "error": self.error})
        elif kind == "input_audio_buffer.append":
            audio = base64.b64decode(event["audio"])
            conn.audio += audio
            conn.buffered += len(audio)
            if (conn.turn_detection is not None and self.caller_turn_ms is not None
                    and conn.buffered >= self.caller_turn_ms * conn.bytes_per_ms):
                await self._caller_turn(ws, conn, vad=True)
                await self._reply(ws, conn)
        elif kind == "input_audio_buffer.commit":
            if conn.buffered < MIN_COMMIT_MS * conn.bytes_per_ms:
                buffered_ms = conn.buffered / conn.bytes_per_ms
                await self._error(ws, conn, event, "input_audio_buffer_commit_empty",
                                  "Error committing input audio buffer: buffer too small. Expected at least "
                                  f"{MIN_COMMIT_MS}ms of audio, but buffer only has {buffered_ms:.2f}ms of audio.")
            elif conn.transcription and self.stall is not None:
                self.stall.set()
            else:
                await self._caller_turn(ws, conn, vad=False)
        elif kind == "response.create":
            if conn.pending_call is not None:
                assert any(call_id == conn.pending_call for call_id, _ in conn.tool_outputs), \
                    f"response.create before the output of {conn.pending_call}"
                conn.pending_call = None
            await self._reply(ws, conn)
        elif kind == "conversation.item.create" and event["item"]["type"] == "function_call_output":
            conn.tool_outputs.append((event["item"]["call_id"], event["item"]["output"]))
        elif kind == "conversation.item.truncate":
            item_id, end_ms = event["item_id"], event["audio_end_ms"]
            conn.truncates.append((item_id, end_ms))
            sent_ms = len(conn.agent_audio.get(item_id, b"")) // conn.bytes_per_ms
            if end_ms > sent_ms:
                await self._error(ws, conn, event, None,
                                  f"Audio content of {sent_ms}ms is already shorter than {end_ms}ms")
            else:
                await self._send(ws, conn, {"type": "conversation.item.truncated", "item_id": item_id,
                                            "content_index": 0, "audio_end_ms": end_ms})
        elif kind == "response.cancel":
            await self._error(ws, conn, event, "response_cancel_not_active",
                              "Cancellation failed: no active response found")

    async def _caller_turn(self, ws: trio_websocket.WebSocketConnection, conn: Connection, *, vad: bool) -> None:
        item_id = self._id("item")
        heard_ms = conn.buffered // conn.bytes_per_ms
        conn.buffered = 0
        if vad:
            await self._send(ws, conn, {"type": "input_audio_buffer.speech_started", "item_id": item_id,
                                        "audio_start_ms": 0})
            await self._send(ws, conn, {"type": "input_audio_buffer.speech_stopped", "item_id": item_id,
                                        "audio_end_ms": heard_ms})
        await self._send(ws, conn, {"type": "input_audio_buffer.committed", "item_id": item_id,
                                    "previous_item_id": None})
        if conn.transcription:
            text = self.transcript
        elif conn.input_transcription:
            text = self.caller_transcript
        else:
            return
        words = text.split()
        interim = self.interim if self.interim is not None and conn.transcription else \
            [word if i == 0 else f" {word}" for i, word in enumerate(words)]
        for delta in interim:
            await self._send(ws, conn, {"type": "conversation.item.input_audio_transcription.delta",
                                        "item_id": item_id, "content_index": 0, "delta": delta})
        await self._send(ws, conn, {"type": "conversation.item.input_audio_transcription.completed",
                                    "item_id": item_id, "content_index": 0, "transcript": text,
                                    "usage": {"type": "duration", "seconds": heard_ms / 1000}})

    # --- replies ---------------------------------------------------------------------

    async def _reply(self, ws: trio_websocket.WebSocketConnection, conn: Connection) -> None:
        reply = self.replies.popleft() if self.replies else Reply()
        response_id = self._id("resp")
        await self._send(ws, conn, {"type": "response.created",
                                    "response": {"id": response_id, "object": "realtime.response",
                                                 "status": "in_progress", "output": []}})
        if reply.tool is not None:
            await self._function_call(ws, conn, response_id, reply.tool)
            status: dict[str, Any] = {"status": "completed"}
        else:
            status = await self._speak(ws, conn, response_id, reply)
            if status.get("status") == "dropped":
                return
        await self._send(ws, conn, {"type": "response.done",
                                    "response": {"id": response_id, "object": "realtime.response",
                                                 "output": [], **status}})

    async def _speak(self, ws: trio_websocket.WebSocketConnection, conn: Connection, response_id: str,
                     reply: Reply) -> dict[str, Any]:
        item_id = self._id("item")
        where = {"response_id": response_id, "item_id": item_id, "output_index": 0, "content_index": 0}
        names = ("response.audio", "response.audio_transcript") if conn.preview else \
            ("response.output_audio", "response.output_audio_transcript")
        await self._send(ws, conn, {"type": "response.output_item.added", "response_id": response_id,
                                    "output_index": 0, "item": self._message(item_id, "in_progress", [])})
        audio = self._tone(conn, reply.audio_ms)
        sent = conn.agent_audio.setdefault(item_id, bytearray())
        words = reply.transcript.split()
        step = math.ceil(len(audio) / reply.chunks) if audio else 0
        for n in range(reply.chunks):
            if reply.drop_after == n:
                await _abort(ws)
                return {"status": "dropped"}
            if reply.interrupted_after == n:
                await self._send(ws, conn, {"type": "input_audio_buffer.speech_started",
                                            "item_id": self._id("item"), "audio_start_ms": 0})
                return {"status": "cancelled", "status_details": {"type": "cancelled", "reason": "turn_detected"}}
            chunk = audio[n * step:(n + 1) * step]
            sent += chunk
            await self._send(ws, conn, {"type": f"{names[0]}.delta", **where,
                                        "delta": base64.b64encode(chunk).decode()})
            if n < len(words):
                await self._send(ws, conn, {"type": f"{names[1]}.delta", **where,
                                            "delta": words[n] if n == 0 else f" {words[n]}"})
        await self._send(ws, conn, {"type": f"{names[0]}.done", **where})
        await self._send(ws, conn, {"type": f"{names[1]}.done", **where, "transcript": reply.transcript})
        content = [{"type": "audio" if conn.preview else "output_audio", "transcript": reply.transcript}]
        await self._send(ws, conn, {"type": "response.output_item.done", "response_id": response_id,
                                    "output_index": 0, "item": self._message(item_id, "completed", content)})
        return {"status": "completed"}

    async def _function_call(self, ws: trio_websocket.WebSocketConnection, conn: Connection, response_id: str,
                             tool: ToolScript) -> None:
        item_id = self._id("item")
        where = {"response_id": response_id, "item_id": item_id, "output_index": 0, "call_id": tool.call_id}
        item = {"id": item_id, "object": "realtime.item", "type": "function_call", "call_id": tool.call_id,
                "name": tool.name}
        await self._send(ws, conn, {"type": "response.output_item.added", "response_id": response_id,
                                    "output_index": 0, "item": {**item, "arguments": "", "status": "in_progress"}})
        half = len(tool.arguments) // 2
        for piece in (tool.arguments[:half], tool.arguments[half:]):
            await self._send(ws, conn, {"type": "response.function_call_arguments.delta", **where, "delta": piece})
        done = {"type": "response.function_call_arguments.done", **where, "arguments": tool.arguments}
        await self._send(ws, conn, done if conn.preview else {**done, "name": tool.name})
        await self._send(ws, conn, {"type": "response.output_item.done", "response_id": response_id,
                                    "output_index": 0,
                                    "item": {**item, "arguments": tool.arguments, "status": "completed"}})
        conn.pending_call = tool.call_id

    # --- helpers ---------------------------------------------------------------------

    def _message(self, item_id: str, status: str, content: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": item_id, "object": "realtime.item", "type": "message", "role": "assistant",
                "status": status, "content": content}

    def _tone(self, conn: Connection, ms: int) -> bytes:
        t = np.arange(conn.rate * ms // 1000) / conn.rate
        pcm = (TONE_AMPLITUDE * np.sin(2 * np.pi * TONE_HZ * t)).astype("<i2").tobytes()
        return PCMU.transcoder().encode(pcm) if conn.pcmu else pcm

    async def _error(self, ws: trio_websocket.WebSocketConnection, conn: Connection, cause: dict[str, Any],
                     code: str | None, message: str) -> None:
        await self._send(ws, conn, {"type": "error", "error": {
            "type": "invalid_request_error", "code": code, "message": message, "param": None,
            "event_id": cause.get("event_id")}})

    async def _send(self, ws: trio_websocket.WebSocketConnection, conn: Connection, event: dict[str, Any]) -> None:
        event = {"event_id": self._id("event"), **event}
        strict(PREVIEW_SERVER if conn.preview else GA_SERVER, event)
        await ws.send_message(json.dumps(event))

    def _validate(self, conn: Connection, event: dict[str, Any]) -> None:
        if conn.transcription and event["type"] == "session.update":
            assert event["session"].get("type") == "transcription", event
        strict(PREVIEW_CLIENT if conn.preview else GA_CLIENT, event)

    def _id(self, kind: str) -> str:
        self._ids += 1
        return f"{kind}_{self._ids}"


def strict(adapter: pydantic.TypeAdapter[Any], event: dict[str, Any]) -> None:
    """``event`` is one of ``adapter``'s models, with no field the model does not know.

    The ``openai`` models accept unknown fields (``extra="allow"``) so that the library
    survives new server fields; the service itself refuses unknown client parameters.
    """
    try:
        model = adapter.validate_python(event)
    except pydantic.ValidationError as exc:
        raise AssertionError(f"{event.get('type')} does not match the openai models: {exc}") from None
    _no_extras(model, event.get("type", "?"))


def _no_extras(value: Any, where: str) -> None:
    if isinstance(value, pydantic.BaseModel):
        assert not value.model_extra, f"{where}: unknown fields {sorted(value.model_extra)}"
        for name in type(value).model_fields:
            _no_extras(getattr(value, name), f"{where}.{name}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _no_extras(item, f"{where}[{i}]")


async def _abort(ws: trio_websocket.WebSocketConnection) -> None:
    """Drop the TCP connection with no WebSocket close, as a dying proxy does.

    trio-websocket has no public abort; its stream is the only way to one.
    """
    await ws._stream.aclose()  # noqa: SLF001
