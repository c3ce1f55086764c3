"""A fake OpenAI HTTP API on loopback, written on Trio and h11 (no web framework).

It speaks to the real ``AsyncOpenAI`` client the way api.openai.com does on the wire:

- ``POST /v1/chat/completions`` with ``"stream": true``: Server-Sent Events in a chunked
  body, one ``data: {chat.completion.chunk}`` event per delta, then ``data: [DONE]``.
  Text arrives in several deltas; a tool call's ``id`` and ``name`` come in its first
  piece only and its arguments in several more, keyed by ``index`` (parallel calls one
  after the other, as OpenAI sends them, or interleaved, as a looser server might).
- ``POST /v1/audio/speech``: raw PCM (s16le, 24 kHz, mono) in several chunks of odd
  sizes, so that some split a sample, with pauses between them.
- ``POST /v1/audio/transcriptions``: a multipart form, parsed into its fields and file,
  answered with ``{"text": ...}``.

Each endpoint answers from a queue of scripted replies (:meth:`FakeOpenAI.script`), which
may also be failures: an HTTP error before the reply (the client's retries show as extra
requests), a stall (for timeouts) or a connection dropped mid-stream. Every request is
recorded with its headers and body, how many chunks of the reply went out, and whether the
client went away before the reply's end. Request bodies are checked against the
``openai`` package's own parameter types, so a provider that sends the wrong shape gets a
400, as it would from the real service.
"""

from __future__ import annotations

import json
import re
import time
from collections import defaultdict, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import h11
import trio
from openai.types.audio.speech_create_params import SpeechCreateParams
from openai.types.audio.transcription_create_params import TranscriptionCreateParamsNonStreaming
from openai.types.chat import ChatCompletionChunk
from openai.types.chat.completion_create_params import CompletionCreateParamsStreaming
from pydantic import TypeAdapter, ValidationError
from typing_extensions import Required, get_origin, get_type_hints

CHAT = "/v1/chat/completions"
SPEECH = "/v1/audio/speech"
TRANSCRIPTIONS = "/v1/audio/transcriptions"

#: The speech endpoint's PCM: s16le mono at 24 kHz.
SPEECH_RATE = 24000
READ_SIZE = 64 * 1024
#: Larger bodies are refused; the real service takes 25 MB of audio.
MAX_BODY = 26 * 1024 * 1024
_BOUNDARY = re.compile(r'boundary="?([^";]+)"?')


# --- what the fake saw -----------------------------------------------------------------


@dataclass(frozen=True)
class Upload:
    """A file part of a multipart form."""

    filename: str
    content_type: str
    data: bytes


@dataclass(eq=False)
class RecordedRequest:
    method: str
    path: str
    #: Every header, names lower-cased (repeated ones joined by ", ").
    headers: dict[str, str]
    body: bytes
    json: dict[str, Any] | None = None
    #: A multipart form's text fields and files.
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, Upload] = field(default_factory=dict)
    #: Why the fake refused the body (answered 400), or "".
    invalid: str = ""
    #: Body chunks of the reply sent so far (SSE events, PCM pieces).
    chunks_sent: int = 0
    #: The whole reply went out.
    completed: bool = False
    #: The client closed the connection before the reply's end.
    disconnected: bool = False
    #: Set once the fake is done with this request, whatever the outcome.
    finished: trio.Event = field(default_factory=trio.Event)

    @property
    def api_key(self) -> str:
        return self.headers.get("authorization", "").removeprefix("Bearer ")


# --- scripted replies ------------------------------------------------------------------


class Reply(Protocol):
    async def send(self, answer: Answer) -> None:
        """Answer ``answer.request`` through ``answer``."""


@dataclass(frozen=True)
class ToolCallScript:
    """A tool call the fake model makes, its JSON ``arguments`` sent in ``pieces`` parts."""

    id: str
    name: str
    arguments: str
    pieces: int = 3


@dataclass(frozen=True)
class ChatStream:
    """A streamed chat completion: one SSE chunk per ``(delta, finish_reason)``, then [DONE]."""

    deltas: Sequence[tuple[dict[str, Any], str | None]]
    #: Seconds between chunks.
    pause: float = 0.0
    #: Close the connection after this many chunks, without ending the body.
    drop_after: int | None = None

    @classmethod
    def of(cls, *pieces: str, tool_calls: Sequence[ToolCallScript] = (), interleaved: bool = False,
           finish_reason: str | None = None, pause: float = 0.0, drop_after: int | None = None) -> ChatStream:
        """Reply text in ``pieces``, then ``tool_calls`` (one after the other, as OpenAI
        sends them, or ``interleaved`` piece by piece)."""
        deltas: list[tuple[dict[str, Any], str | None]] = [
            ({"role": "assistant", "content": "" if pieces else None, "refusal": None}, None)]
        deltas += [({"content": piece}, None) for piece in pieces]
        calls = [[_tool_start(index, call)] + [_tool_piece(index, part) for part in _split(call.arguments, call.pieces)]
                 for index, call in enumerate(tool_calls)]
        if interleaved:
            calls = [[delta for call in calls for delta in call[round_:round_ + 1]]
                     for round_ in range(max(map(len, calls), default=0))]
        deltas += [(delta, None) for call in calls for delta in call]
        deltas.append(({}, finish_reason or ("tool_calls" if tool_calls else "stop")))
        return cls(deltas, pause=pause, drop_after=drop_after)

    async def send(self, answer: Answer) -> None:
        model = answer.request.json["model"] if answer.request.json else ""
        await answer.start(200, "text/event-stream; charset=utf-8")
        for count, (delta, finish_reason) in enumerate(self.deltas):
            if count == self.drop_after:
                return answer.drop()
            await answer.chunk(b"data: " + _chunk_json(model, delta, finish_reason) + b"\n\n")
            await trio.sleep(self.pause)
        if self.drop_after is not None:
            return answer.drop()
        await answer.chunk(b"data: [DONE]\n\n")
        await answer.end()


def _tool_start(index: int, call: ToolCallScript) -> dict[str, Any]:
    return {"tool_calls": [{"index": index, "id": call.id, "type": "function",
                            "function": {"name": call.name, "arguments": ""}}]}


def _tool_piece(index: int, arguments: str) -> dict[str, Any]:
    return {"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}


def _split(text: str, pieces: int) -> list[str]:
    step = -(-len(text) // pieces) or 1
    return [text[start:start + step] for start in range(0, len(text), step)]


def _chunk_json(model: str, delta: dict[str, Any], finish_reason: str | None) -> bytes:
    chunk = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": int(time.time()),
             "model": model, "system_fingerprint": "fp_fake",
             "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
    ChatCompletionChunk.model_validate(chunk)  # what we send is what the library parses
    return json.dumps(chunk, separators=(",", ":")).encode()


@dataclass(frozen=True)
class PcmStream:
    """Speech: ``pcm`` sent in ``chunks`` pieces of odd byte lengths, ``pause`` s apart."""

    pcm: bytes
    chunks: int = 6
    pause: float = 0.02
    drop_after: int | None = None

    def pieces(self) -> list[bytes]:
        size = len(self.pcm) // self.chunks | 1  # odd: pieces split samples
        return [self.pcm[start:start + size] for start in range(0, len(self.pcm), size)]

    async def send(self, answer: Answer) -> None:
        await answer.start(200, "audio/pcm")
        for count, piece in enumerate(self.pieces()):
            if count == self.drop_after:
                return answer.drop()
            if count:
                await trio.sleep(self.pause)
            await answer.chunk(piece)
        await answer.end()


@dataclass(frozen=True)
class JsonReply:
    body: dict[str, Any]
    status: int = 200

    async def send(self, answer: Answer) -> None:
        await answer.whole(self.status, json.dumps(self.body).encode(), "application/json")


@dataclass(frozen=True)
class ErrorReply:
    """An API error before any reply, shaped like OpenAI's. ``{api_key}`` in ``message``
    is replaced by the key the client sent, as a careless proxy might echo it."""

    status: int
    message: str = "the fake was told to fail"
    type: str = "server_error"
    #: Sent as ``retry-after-ms``: the client waits this long before a retry.
    retry_after_ms: int = 1

    async def send(self, answer: Answer) -> None:
        error = {"message": self.message.replace("{api_key}", answer.request.api_key),
                 "type": self.type, "param": None, "code": None}
        await answer.whole(self.status, json.dumps({"error": error}).encode(), "application/json",
                           [("retry-after-ms", str(self.retry_after_ms))])


class Stall:
    """Read the request and never answer, until the client gives up."""

    async def send(self, answer: Answer) -> None:
        await trio.sleep_forever()


# --- the server ------------------------------------------------------------------------


class Answer:
    """The reply to one request on one h11 connection: a Reply's only way to the wire."""

    def __init__(self, connection: h11.Connection, stream: trio.SocketStream, request: RecordedRequest) -> None:
        self.request = request
        self._connection = connection
        self._stream = stream
        self.dropped = False

    async def start(self, status: int, content_type: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        """The head of a streamed (chunked) reply."""
        await self._send(h11.Response(status_code=status, headers=[
            ("content-type", content_type), ("transfer-encoding", "chunked"), *headers]))

    async def chunk(self, data: bytes) -> None:
        await self._send(h11.Data(data=data))
        self.request.chunks_sent += 1

    async def end(self) -> None:
        await self._send(h11.EndOfMessage())
        self.request.completed = True

    async def whole(self, status: int, body: bytes, content_type: str,
                    headers: Sequence[tuple[str, str]] = ()) -> None:
        await self._send(h11.Response(status_code=status, headers=[
            ("content-type", content_type), ("content-length", str(len(body))), *headers]))
        await self._send(h11.Data(data=body))
        await self.end()

    def drop(self) -> None:
        """Close the connection once the reply returns, leaving its body unfinished."""
        self.dropped = True

    async def _send(self, event: h11.Event) -> None:
        await self._stream.send_all(self._connection.send(event) or b"")


class FakeOpenAI:
    """The fake service. ``await nursery.start(fake.serve)`` returns its base URL."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.base_url = ""
        self._replies: defaultdict[str, deque[Reply]] = defaultdict(deque)

    def script(self, path: str, *replies: Reply) -> None:
        """Answer the next requests to ``path`` with ``replies``, in order."""
        self._replies[path].extend(replies)

    def to(self, path: str) -> list[RecordedRequest]:
        """The requests made to ``path`` so far."""
        return [request for request in self.requests if request.path == path]

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, self._serve_connection, 0, host="127.0.0.1"))
            host, port = listeners[0].socket.getsockname()[:2]
            self.base_url = f"http://{host}:{port}/v1"
            task_status.started(self.base_url)

    async def _serve_connection(self, stream: trio.SocketStream) -> None:
        connection = h11.Connection(h11.SERVER)
        async with stream:
            while True:
                try:
                    request = await _read_request(connection, stream)
                except (h11.RemoteProtocolError, trio.BrokenResourceError):
                    return
                if request is None:
                    return
                self.requests.append(request)
                answer = Answer(connection, stream, request)
                try:
                    await self._answer(answer, stream, connection)
                finally:
                    request.finished.set()
                if answer.dropped or request.disconnected or connection.our_state is not h11.DONE:
                    return
                try:
                    connection.start_next_cycle()
                except h11.LocalProtocolError:  # the client's half is not done: not reusable
                    return

    async def _answer(self, answer: Answer, stream: trio.SocketStream, connection: h11.Connection) -> None:
        """Send the scripted reply while watching for the client going away."""
        request = answer.request
        reply: Reply
        if request.invalid:
            reply = ErrorReply(400, f"fake: {request.invalid}", type="invalid_request_error")
        elif request.path not in _VALIDATORS:
            reply = ErrorReply(404, f"fake: no endpoint {request.method} {request.path}", type="invalid_request_error")
        elif not self._replies[request.path]:
            reply = ErrorReply(400, f"fake: nothing scripted for {request.path}", type="invalid_request_error")
        else:
            reply = self._replies[request.path].popleft()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_watch_for_close, stream, connection, request, nursery.cancel_scope)
            try:
                await reply.send(answer)
            except trio.BrokenResourceError:
                request.disconnected = True
            nursery.cancel_scope.cancel()


async def _watch_for_close(stream: trio.SocketStream, connection: h11.Connection, request: RecordedRequest,
                           scope: trio.CancelScope) -> None:
    """An HTTP/1.1 client sends nothing while it reads a reply, so EOF here is the client
    closing the connection: record it and stop the reply."""
    while True:
        try:
            data = await stream.receive_some(READ_SIZE)
        except trio.BrokenResourceError:
            data = b""
        if not data:
            request.disconnected = not request.completed
            scope.cancel()
            return
        connection.receive_data(data)  # a pipelined request: kept for the next cycle


async def _read_request(connection: h11.Connection, stream: trio.SocketStream) -> RecordedRequest | None:
    """The next whole request on ``connection``, or None once the client has closed it."""
    head: h11.Request | None = None
    body = bytearray()
    while True:
        event = connection.next_event()
        if event is h11.NEED_DATA:
            connection.receive_data(await stream.receive_some(READ_SIZE))
        elif isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_BODY:
                raise h11.RemoteProtocolError("request body too large")
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            return _recorded(head, bytes(body))
        elif isinstance(event, h11.ConnectionClosed):
            return None


def _recorded(head: h11.Request, body: bytes) -> RecordedRequest:
    headers: dict[str, str] = {}
    for name, value in head.headers:
        key = name.decode("latin-1").lower()
        headers[key] = f"{headers[key]}, {value.decode('latin-1')}" if key in headers else value.decode("latin-1")
    request = RecordedRequest(head.method.decode(), head.target.decode().split("?")[0], headers, body)
    validator = _VALIDATORS.get(request.path)
    if validator is not None:
        try:
            validator(request)
        except (ValueError, ValidationError) as exc:
            request.invalid = " ".join(str(exc).split())
    return request


# --- request checks against the openai package's own parameter types -------------------


class _Params:
    """One endpoint's parameter TypedDict: which keys it knows, which it needs."""

    def __init__(self, params: type, *, validate: bool = True) -> None:
        hints = get_type_hints(params, include_extras=True)
        self.known = set(hints)
        self.required = {name for name, hint in hints.items() if get_origin(hint) is Required}
        self.name = params.__name__
        # The transcription params hold an IO type pydantic cannot build a schema for.
        self._adapter = TypeAdapter(params) if validate else None

    def check(self, values: dict[str, Any]) -> None:
        if unknown := set(values) - self.known:
            raise ValueError(f"{self.name} has no field(s) {sorted(unknown)}")
        if missing := self.required - set(values):
            raise ValueError(f"{self.name} needs field(s) {sorted(missing)}")
        if self._adapter is not None:
            _drain(self._adapter.validate_python(values))


def _drain(value: Any) -> None:
    """Pydantic validates ``Iterable`` fields (messages, tools) lazily: walk them all."""
    if isinstance(value, dict):
        for item in value.values():
            _drain(item)
    elif isinstance(value, Iterator | list | tuple):
        for item in value:
            _drain(item)


_CHAT_PARAMS = _Params(CompletionCreateParamsStreaming)
_SPEECH_PARAMS = _Params(SpeechCreateParams)
_TRANSCRIPTION_PARAMS = _Params(TranscriptionCreateParamsNonStreaming, validate=False)


def _json_body(request: RecordedRequest) -> dict[str, Any]:
    if not request.headers.get("content-type", "").startswith("application/json"):
        raise ValueError(f"expected a JSON body, got content-type {request.headers.get('content-type')!r}")
    body = json.loads(request.body)
    if not isinstance(body, dict):
        raise ValueError("the JSON body is not an object")
    request.json = body
    return body


def _check_chat(request: RecordedRequest) -> None:
    body = _json_body(request)
    _CHAT_PARAMS.check(body)
    if body["stream"] is not True:
        raise ValueError("this fake streams chat completions only: send stream=true")


def _check_speech(request: RecordedRequest) -> None:
    _SPEECH_PARAMS.check(_json_body(request))


def _check_transcription(request: RecordedRequest) -> None:
    request.fields, request.files = parse_multipart(request.headers.get("content-type", ""), request.body)
    _TRANSCRIPTION_PARAMS.check({**request.fields, **request.files})
    if "file" not in request.files:
        raise ValueError("the form's 'file' part is not a file")


_VALIDATORS = {CHAT: _check_chat, SPEECH: _check_speech, TRANSCRIPTIONS: _check_transcription}


def parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, Upload]]:
    """The text fields and files of a ``multipart/form-data`` body (RFC 7578)."""
    match = _BOUNDARY.search(content_type)
    if not content_type.startswith("multipart/form-data") or match is None:
        raise ValueError(f"expected a multipart/form-data body, got content-type {content_type!r}")
    delimiter = b"--" + match.group(1).encode()
    parts = body.split(b"\r\n" + delimiter)
    if not parts[0].startswith(delimiter) or not parts[-1].startswith(b"--"):
        raise ValueError("the multipart body does not start or end with its boundary")
    parts[0] = parts[0][len(delimiter):]
    fields: dict[str, str] = {}
    files: dict[str, Upload] = {}
    for part in parts[:-1]:
        head, separator, data = part.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not separator:
            raise ValueError("a multipart part has no blank line after its headers")
        headers = dict(line.split(": ", 1) for line in head.decode().split("\r\n"))
        disposition = {key.lower(): value for key, value in headers.items()}.get("content-disposition", "")
        params = dict(re.findall(r'(\w+)="([^"]*)"', disposition))
        if "filename" in params:
            content = {key.lower(): value for key, value in headers.items()}.get("content-type", "")
            files[params["name"]] = Upload(params["filename"], content, data)
        else:
            fields[params["name"]] = data.decode()
    return fields, files
