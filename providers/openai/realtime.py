"""OpenAI Realtime speech-to-speech over trio-websocket: the thin Trio half of
:mod:`.realtime_protocol`.

The ``openai`` package's own realtime client runs on asyncio, so trivox speaks the
WebSocket itself. ``connect()`` owns the socket for the life of its ``async with``
block (trio-websocket's reader task lives in a nursery inside it), so cancelling the
block closes the socket, and nothing outlives the call.

A dialog uses the session like this::

    async with sts.connect(8000, instructions, tools) as session:
        # one task: await session.send_audio(frame) for every caller frame
        async for event in session.events():
            AgentAudio(pcm, item_id)  -> queue pcm to the pacer, remember item_id per frame
            CallerSpeechStarted()     -> barge-in: flush the pacer, then
                                         await session.truncate(item_id_playing, played_ms)
            ToolCall(id, name, args)  -> await session.tool_result(id, output)
            ResponseDone()            -> the reply's audio is all queued (the last of it
                                         comes just before this event)

With ``turn_detection="none"`` the service hears no turns: the dialog's VAD ends the
caller's turn with ``await session.respond()``, which commits the audio first.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import trio_websocket

from ..base import ProviderError, StsEvent, ToolSpec
from .client import OpenAISettings
from .realtime_protocol import DEFAULT_TRANSCRIPTION_MODEL, Event, RealtimeProtocol, SessionOptions

log = logging.getLogger("trivox.openai.realtime")

#: Largest server event accepted. An audio delta is a few hundred ms (tens of kB);
#: ``session.updated`` repeats the instructions and tools.
MAX_MESSAGE_BYTES = 4 * 2**20
#: Seconds to wait for the service to answer our close before dropping the TCP.
CLOSE_TIMEOUT = 2.0
#: What the preview (beta) interface needs on the handshake; GA models must not send it.
PREVIEW_HEADER = (b"openai-beta", b"realtime=v1")


class RealtimeSocket:
    """A Realtime WebSocket carrying JSON events; every failure is a ProviderError."""

    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self._ws = ws

    async def send(self, events: Sequence[Event]) -> None:
        for event in events:
            try:
                await self._ws.send_message(json.dumps(event))
            except trio_websocket.ConnectionClosed as exc:
                raise _dropped(exc) from None

    async def receive(self) -> dict[str, Any]:
        try:
            message = await self._ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            raise _dropped(exc) from None
        try:
            event = json.loads(message)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            raise ProviderError("OpenAI Realtime sent a message that is not a JSON event")
        return event


@asynccontextmanager
async def open_realtime(settings: OpenAISettings, *, preview: bool = False,
                        **query: str) -> AsyncIterator[RealtimeSocket]:
    """The Realtime WebSocket at ``settings``' base URL with ``query`` (model=... or intent=...)."""
    url = settings.realtime_url(**query)
    headers = [(name.lower().encode(), value.encode()) for name, value in settings.headers().items()]
    if preview:
        headers.append(PREVIEW_HEADER)
    failure: BaseException | None = None  # what ended the block, if anything did
    try:
        async with trio_websocket.open_websocket_url(
            url, extra_headers=headers, max_message_size=MAX_MESSAGE_BYTES,
            connect_timeout=settings.timeout, disconnect_timeout=CLOSE_TIMEOUT,
        ) as ws:
            try:
                yield RealtimeSocket(ws)
            except BaseException as exc:
                failure = exc
                raise
    except trio_websocket.DisconnectionTimeout:
        # The TCP connection is closed all the same; a slow goodbye is no failure, but it
        # must not hide the one that ended the block.
        if failure is not None:
            raise failure from None
        log.debug("OpenAI Realtime did not answer our close in %g s; dropped the connection", CLOSE_TIMEOUT)
    except trio_websocket.ConnectionRejected as exc:
        raise ProviderError(_rejected(url, exc)) from None
    except trio_websocket.ConnectionTimeout:
        raise ProviderError(f"OpenAI Realtime: no answer from {url} within {settings.timeout:g} s: "
                            "check openai.base_url and the network, or raise openai.timeout") from None
    except trio_websocket.HandshakeError as exc:
        cause = exc.__cause__ or exc
        raise ProviderError(f"OpenAI Realtime: cannot connect to {url} ({type(cause).__name__}: {cause}): "
                            "check openai.base_url and the network") from None


class RealtimeSession:
    """One call's live conversation (the StsSession protocol); see the module docstring."""

    def __init__(self, socket: RealtimeSocket, protocol: RealtimeProtocol) -> None:
        self._socket = socket
        self._protocol = protocol

    @property
    def current_item_id(self) -> str:
        """The reply item whose audio arrived last ("" before the first): the one playing."""
        return self._protocol.current_item_id

    async def send_audio(self, pcm: bytes) -> None:
        await self._socket.send(self._protocol.append_audio(pcm))

    async def events(self) -> AsyncIterator[StsEvent]:
        while True:
            for event in self._protocol.receive(await self._socket.receive()):
                yield event

    async def truncate(self, item_id: str, played_ms: int) -> None:
        await self._socket.send(self._protocol.truncate(item_id, played_ms))

    async def tool_result(self, call_id: str, output: str) -> None:
        await self._socket.send(self._protocol.tool_output(call_id, output))

    async def respond(self, instructions: str = "") -> None:
        await self._socket.send(self._protocol.respond(instructions))

    async def commit(self) -> None:
        """End the caller's turn without asking for a reply (turn detection "none")."""
        await self._socket.send(self._protocol.commit())


class OpenAIRealtime:
    """The STS protocol on the OpenAI Realtime API (GA models, or preview ones)."""

    name = "openai"

    def __init__(self, settings: OpenAISettings, model: str = "gpt-realtime", voice: str = "alloy",
                 temperature: float | None = None, max_output_tokens: int | None = None,
                 turn_detection: str = "server_vad",
                 input_transcription: str = DEFAULT_TRANSCRIPTION_MODEL) -> None:
        self._settings = settings
        # Checked now, so a bad option stops the server at start and not the first call.
        self.options = SessionOptions(model=model, voice=voice, temperature=temperature,
                                      max_output_tokens=max_output_tokens, turn_detection=turn_detection,
                                      input_transcription=input_transcription)

    @asynccontextmanager
    async def connect(self, sample_rate: int, instructions: str, tools: Sequence[ToolSpec] = (), *,
                      call_id: str | None = None) -> AsyncIterator[RealtimeSession]:
        """``call_id`` is not sent: the service keys its sessions on the socket."""
        protocol = RealtimeProtocol(self.options, instructions, tools, sample_rate)
        async with open_realtime(self._settings, preview=protocol.preview, model=self.options.model) as socket:
            await socket.send(protocol.session_update())
            yield RealtimeSession(socket, protocol)


def _dropped(exc: trio_websocket.ConnectionClosed) -> ProviderError:
    reason = exc.reason
    if reason is None:
        detail = "no close reason"
    else:
        detail = f"{reason.code} {reason.name}" + (f": {reason.reason}" if reason.reason else "")
    return ProviderError(f"OpenAI Realtime connection closed mid-session ({detail})")


def _rejected(url: str, exc: trio_websocket.ConnectionRejected) -> str:
    status = exc.status_code
    if status in (401, 403):  # the service's text quotes part of the key: not repeated
        return f"OpenAI Realtime refused the API key (HTTP {status}): check openai.api_key"
    detail = _service_message(exc.body)
    hint = ": check the model name and openai.base_url" if status == 404 else ""
    return f"OpenAI Realtime refused {url} (HTTP {status}{': ' + detail if detail else ''}){hint}"


def _service_message(body: bytes | None) -> str:
    """The ``error.message`` of an OpenAI JSON error body, if that is what it is."""
    try:
        error = json.loads(body or b"").get("error")
    except (ValueError, AttributeError):
        return ""
    return str(error.get("message", "")) if isinstance(error, Mapping) else ""
