"""An AVR speech-to-speech connector (avr-sts-openai, -gemini, -elevenlabs, -ultravox,
-deepgram, -xai...) as trivox's STS, over one trio-websocket connection per call.

protocol.StsConnection does the translation; this module only moves its messages. What
AVR's protocol has no message for, and so what a session does instead:

- ``instructions`` and ``tools`` of ``connect``: the connector's own configuration
  (its environment and ``tools/`` folder) decides them; they are not sent.
- ``truncate``: nothing to do. The connector's model hears the barge-in itself (that is
  what its ``interruption`` reports) and stops the reply on its side.
- ``respond``: nothing to do. The connectors start the conversation themselves once
  ``init`` has arrived (avr-sts-gemini asks its model to begin, avr-sts-xai sends
  ``response.create`` or its welcome message, an ElevenLabs agent has its first message).
- ``tool_result``: a ProviderError, since no ToolCall ever comes from AVR to answer.
- No ResponseDone and no CallerSpeechStopped: AVR marks neither. AgentAudio has no
  ``item_id``.

``events()`` ends when the connector closes the WebSocket properly (code 1000, or none
given, as Node's ``ws.close()`` does); a dropped connection or any other code is a
ProviderError, and so is an ``error`` message.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from urllib.parse import urlsplit
from uuid import uuid4

from ..base import ProviderError, StsEvent, ToolSpec
from .protocol import AvrProtocolError, ConnectorError, StsConnection, shown

try:
    import trio_websocket
except ImportError:
    raise ProviderError("the AVR STS provider needs trio-websocket: pip install 'trivox[openai]'") from None

log = logging.getLogger(__name__)

#: Seconds to open the WebSocket, and to close it.
DEFAULT_TIMEOUT = 10.0
#: Close codes that end a session cleanly: normal closure, and none given (RFC 6455 7.4.1).
CLEAN_CLOSE_CODES = frozenset({1000, 1005})


class AvrSts:
    """The STS protocol on an AVR STS connector at ``url`` (``ws://host:port``, with any
    query AVR Core would add). ``timeout``: seconds to connect and to close. The
    session's uuid is ``call_id`` of ``connect``, else the one given here, else a new
    uuid4."""

    name = "avr"

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT, call_id: str | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ProviderError(f"AVR STS URL {url!r} is not a ws:// or wss:// URL (like ws://avr-sts-openai:6030)")
        if timeout <= 0:
            raise ProviderError(f"AVR STS timeout must be positive, not {timeout}")
        self.url = url
        self._shown = shown(url)
        self.timeout = timeout
        self.call_id = call_id
        self._warned = False

    @asynccontextmanager
    async def connect(self, sample_rate: int, instructions: str = "", tools: Sequence[ToolSpec] = (), *,
                      call_id: str | None = None) -> AsyncIterator[AvrStsSession]:
        """A session for audio at ``sample_rate`` Hz; ``init`` is sent before it is yours."""
        if (instructions or tools) and not self._warned:
            self._warned = True
            log.warning("AVR STS at %s takes its instructions and tools from the connector's own "
                        "configuration; the ones given here are not sent", self._shown)
        core = StsConnection(sample_rate, call_id or self.call_id or str(uuid4()))
        try:
            async with trio_websocket.open_websocket_url(
                self.url, connect_timeout=self.timeout, disconnect_timeout=self.timeout,
            ) as ws:
                session = AvrStsSession(ws, core, self._shown)
                await session._send(core.start())
                yield session
        except trio_websocket.ConnectionRejected as exc:
            raise ProviderError(f"AVR STS at {self._shown} refused the WebSocket (HTTP {exc.status_code}): "
                                "is the URL right?") from None
        except trio_websocket.DisconnectionTimeout:
            log.info("AVR STS at %s did not finish the closing handshake within %g s", self._shown, self.timeout)
        except trio_websocket.ConnectionTimeout:
            raise ProviderError(f"AVR STS at {self._shown} did not answer within {self.timeout:g} s") from None
        except trio_websocket.HandshakeError as exc:
            raise ProviderError(f"AVR STS at {self._shown} is unreachable ({exc.__cause__ or exc}): "
                                "is the connector running?") from None


class AvrStsSession:
    """One call's AVR STS session: caller audio and digits in, agent audio and events out."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, core: StsConnection, url: str) -> None:
        self._ws = ws
        self._core = core
        self._url = url

    @property
    def uuid(self) -> str:
        return self._core.uuid

    async def send_audio(self, pcm: bytes) -> None:
        for message in self._core.send_audio(pcm):
            await self._send(message)

    async def send_digit(self, digit: str) -> None:
        """The caller pressed ``digit`` (0-9, *, #, A-D): AVR's ``dtmf_digit``."""
        await self._send(self._core.send_digit(digit))

    async def events(self) -> AsyncIterator[StsEvent]:
        while True:
            try:
                message = await self._ws.get_message()
            except trio_websocket.ConnectionClosed as exc:
                if exc.reason.code not in CLEAN_CLOSE_CODES:
                    raise self._dropped(exc) from None
                for tail in self._core.end():
                    yield tail
                return
            try:
                received = self._core.receive(message)
            except AvrProtocolError as exc:
                raise ProviderError(f"AVR STS at {self._url} sent what AVR's protocol does not allow: {exc}") from None
            for event in received:
                if isinstance(event, ConnectorError):
                    raise ProviderError(f"AVR STS at {self._url} failed: {event.message}")
                yield event

    async def truncate(self, item_id: str, played_ms: int) -> None:
        """Nothing to send: the connector stops the reply itself when it hears the caller."""

    async def tool_result(self, call_id: str, output: str) -> None:
        raise ProviderError("AVR STS connectors run their own tools (their tools/ folder); "
                            "there is no tool call to answer")

    async def respond(self, instructions: str = "") -> None:
        """Nothing to send: the connector opens the conversation on its own."""

    async def _send(self, message: str) -> None:
        try:
            await self._ws.send_message(message)
        except trio_websocket.ConnectionClosed as exc:
            raise self._dropped(exc) from None

    def _dropped(self, exc: trio_websocket.ConnectionClosed) -> ProviderError:
        reason = exc.reason
        detail = f"code {reason.code} {reason.name}" + (f": {reason.reason}" if reason.reason else "")
        return ProviderError(f"AVR STS at {self._url} closed the session ({detail})")
