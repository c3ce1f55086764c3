"""AVR's HTTP connectors as trivox's ASR, LLM and TTS (the shapes are in protocol.py).

LLM and TTS are one request each, JSON in and a streamed body out, sent with httpx2 (the
openai library's HTTP client, which runs under Trio through anyio). Reading the body as
it arrives is what streams the reply; leaving the generator closes the response.

ASR speaks HTTP/1.1 through h11 on a Trio stream instead, because of how httpx2 sends a
body: from inside the request call, all of it, before it reads the answer. Streaming an
utterance while it is spoken would then need a task to pump the body, and an AsrStream
has no nursery to hold one (``send_audio`` and ``finish`` are plain calls from the task
that feeds it). With h11 each ``send_audio`` writes its chunk to the socket itself,
``finish`` ends the body and reads the answer, and nothing runs between the calls. h11
also reports where each chunk of the answer starts and ends, which is where AVR's
transcript segments do.

AVR Core opens one ASR request per call and leaves it open; trivox asks per utterance.
So each AsrStream is one request: the utterance as the body, the answer's segments
joined as its transcript. An AVR service finalises a segment only when its own
endpointer hears silence, and some (avr-asr-vosk, avr-asr-soniox) drop whatever is not
final when the body ends, so ``finish`` sends ``tail_silence_ms`` of silence before
ending it. The services' answers end when the body does, so ``finish`` waits for that.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit
from uuid import uuid4

import trio

from media.audio import silence

from ..base import LlmDone, LlmEvent, Message, ProviderError, TextDelta, ToolSpec, Transcript
from .protocol import (
    ASR_CONTENT_TYPE,
    ASR_PATH,
    AVR_RATE,
    LLM_PATH,
    TTS_PATH,
    UUID_HEADER,
    AvrProtocolError,
    PromptStreamDecoder,
    TranscriptAssembler,
    TtsAudioDecoder,
    endpoint,
    error_detail,
    prompt_body,
    resampler,
    shown,
)

try:
    import h11
    import httpx2
except ImportError:
    raise ProviderError("the AVR providers need the openai extra: pip install 'trivox[openai]'") from None

log = logging.getLogger(__name__)

#: Seconds to connect, and to wait for each part of an answer.
DEFAULT_TIMEOUT = 10.0
#: Silence sent after each utterance so the service's endpointer finalises it.
DEFAULT_TAIL_SILENCE_MS = 1000
#: Bytes read from the ASR socket at once.
RECEIVE_BYTES = 16384
#: Most of a failed request's body kept for its error message.
MAX_ERROR_BODY = 4096


class _Service:
    """Where one AVR service is and how to name it in an error."""

    def __init__(self, kind: str, url: str, path: str, timeout: float) -> None:
        self.name = f"AVR {kind}"
        self.url = endpoint(url, path)
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ProviderError(f"{self.name} URL {url!r} is not an http:// or https:// URL "
                                f"(like http://host:port or http://host:port{path})")
        if timeout <= 0:
            raise ProviderError(f"{self.name} timeout must be positive, not {timeout}")
        self.timeout = timeout
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.netloc = parts.netloc.rpartition("@")[2]
        self.target = parts.path + (f"?{parts.query}" if parts.query else "")
        #: Made once: building a TLS context takes tens of milliseconds of event loop.
        self.tls = ssl.create_default_context() if parts.scheme == "https" else None

    def error(self, what: str) -> ProviderError:
        return ProviderError(f"{self.name} at {shown(self.url)} {what}")

    def unreachable(self, exc: BaseException) -> ProviderError:
        return self.error(f"is unreachable ({exc}): is the service running, and is the URL right?")

    def too_slow(self) -> ProviderError:
        return self.error(f"did not answer within {self.timeout:g} s")

    @asynccontextmanager
    async def post(self, body: Mapping[str, Any], headers: Mapping[str, str]) -> AsyncIterator[httpx2.Response]:
        """A streamed POST of ``body`` as JSON; a failure of any kind is a ProviderError."""
        client = httpx2.AsyncClient(timeout=self.timeout, verify=self.tls or False, trust_env=False)
        try:
            async with client, client.stream("POST", self.url, json=body, headers=headers) as response:
                if response.status_code >= 400:
                    raise self.error(f"answered {response.status_code}: {error_detail(await _start_of(response))}")
                yield response
        except httpx2.TimeoutException:
            raise self.too_slow() from None
        except httpx2.ConnectError as exc:
            raise self.unreachable(exc) from None
        except httpx2.HTTPError as exc:
            raise self.error(f"broke off its answer ({exc})") from None
        except AvrProtocolError as exc:
            raise self.error(f"sent what AVR's protocol does not allow: {exc}") from None


async def _start_of(response: httpx2.Response) -> bytes:
    body = b""
    async for data in response.aiter_bytes():
        body += data
        if len(body) >= MAX_ERROR_BODY:
            break
    return body


# --- ASR ------------------------------------------------------------------------------


class AvrAsr:
    """The ASR protocol on an AVR speech-to-text service (avr-asr-vosk, -deepgram, -google-
    cloud-speech, -soniox...): ``url`` is the service's base URL or its full
    ``/speech-to-text-stream`` URL, ``timeout`` seconds to connect and to transcribe after
    the utterance ends, ``tail_silence_ms`` the silence that ends each utterance."""

    name = "avr"

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT,
                 tail_silence_ms: int = DEFAULT_TAIL_SILENCE_MS) -> None:
        if tail_silence_ms < 0:
            raise ProviderError(f"AVR ASR tail_silence_ms must be 0 or more, not {tail_silence_ms}")
        self._service = _Service("ASR", url, ASR_PATH, timeout)
        self._tail = silence(AVR_RATE, tail_silence_ms)

    async def open_stream(self, sample_rate: int, *, call_id: str | None = None) -> AvrAsrStream:
        """One utterance as one request; ``call_id`` becomes its X-UUID (else a new uuid)."""
        if sample_rate <= 0:
            raise ValueError(f"sample rate must be positive, not {sample_rate}")
        service = self._service
        try:
            with trio.fail_after(service.timeout):
                if service.tls is None:
                    stream: trio.abc.Stream = await trio.open_tcp_stream(service.host, service.port)
                else:
                    stream = await trio.open_ssl_over_tcp_stream(service.host, service.port,
                                                                 ssl_context=service.tls)
        except trio.TooSlowError:
            raise service.too_slow() from None
        except OSError as exc:
            raise service.unreachable(exc) from None
        return await AvrAsrStream.start(service, stream, sample_rate, self._tail, call_id or str(uuid4()))


class AvrAsrStream:
    """One utterance streamed to an AVR ASR service as the body of one request."""

    def __init__(self, service: _Service, stream: trio.abc.Stream, sample_rate: int, tail: bytes) -> None:
        self._service = service
        self._stream: trio.abc.Stream | None = stream
        self._http = h11.Connection(h11.CLIENT)
        self._resampler = resampler(sample_rate, AVR_RATE)
        self._tail = tail
        self._finishing = False

    @classmethod
    async def start(cls, service: _Service, stream: trio.abc.Stream, sample_rate: int, tail: bytes,
                    uuid: str) -> AvrAsrStream:
        """The stream on a fresh connection, once the request's head is sent."""
        asr = cls(service, stream, sample_rate, tail)
        await asr._send(h11.Request(method="POST", target=service.target, headers=[
            ("Host", service.netloc),
            ("Content-Type", ASR_CONTENT_TYPE),
            ("Transfer-Encoding", "chunked"),
            (UUID_HEADER, uuid),
            ("Connection", "close"),
        ]))
        return asr

    async def send_audio(self, pcm: bytes) -> None:
        self._check_open()
        data = self._resampler.process(pcm)
        if data:
            await self._send(h11.Data(data=data))

    async def finish(self) -> Transcript:
        """End the utterance (its audio, then the tail of silence) and read the transcript."""
        self._check_open()
        self._finishing = True
        try:
            await self._send(h11.Data(data=self._resampler.flush() + self._tail))
            await self._send(h11.EndOfMessage())
            with trio.fail_after(self._service.timeout):
                text = await self._transcript()
        except trio.TooSlowError:
            raise self._service.too_slow() from None
        finally:
            await self.aclose()
        return Transcript(text, final=True)

    async def aclose(self) -> None:
        """Close the connection (the service sees the request end unfinished); idempotent."""
        stream, self._stream = self._stream, None
        if stream is not None:
            with trio.CancelScope(shield=True):
                await stream.aclose()

    async def _send(self, event: h11.Request | h11.Data | h11.EndOfMessage) -> None:
        """Write one part of the request; any failure closes the stream."""
        if self._stream is None:
            raise trio.ClosedResourceError("this recognition stream is closed")
        try:
            await self._stream.send_all(self._http.send(event))
        except trio.BrokenResourceError as exc:
            await self.aclose()
            raise self._service.error(f"closed the connection mid-request ({exc.__cause__ or exc})") from None
        except BaseException:
            await self.aclose()
            raise

    async def _transcript(self) -> str:
        """Read the answer to its end: the transcript, or a ProviderError for a 4xx/5xx."""
        assert self._stream is not None
        assembler, status, failure = TranscriptAssembler(), 0, b""
        while True:
            try:
                event = self._http.next_event()
            except h11.RemoteProtocolError as exc:
                raise self._service.error(f"broke off its answer ({exc})") from None
            if event is h11.NEED_DATA:
                try:
                    self._http.receive_data(await self._stream.receive_some(RECEIVE_BYTES))
                except trio.BrokenResourceError as exc:
                    raise self._service.error(f"dropped the connection ({exc.__cause__ or exc})") from None
            elif isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                if status >= 400:
                    failure = (failure + event.data)[:MAX_ERROR_BODY]
                else:
                    assembler.feed(event.data, chunk_start=event.chunk_start, chunk_end=event.chunk_end)
            elif isinstance(event, h11.EndOfMessage):
                if status >= 400:
                    raise self._service.error(f"answered {status}: {error_detail(failure)}")
                return assembler.text()
            elif isinstance(event, h11.ConnectionClosed):
                raise self._service.error("closed the connection without answering")

    def _check_open(self) -> None:
        if self._stream is None or self._finishing:
            raise trio.ClosedResourceError("this recognition stream is finished or closed")


# --- LLM ------------------------------------------------------------------------------


class AvrLlm:
    """The LLM protocol on an AVR prompt-stream service (avr-llm-openai, -anthropic,
    -openrouter...): ``url`` is its base URL or full ``/prompt-stream`` URL, ``timeout``
    seconds to connect and between two parts of the reply.

    The service owns its model, system prompt and tools: a text turn of ``messages``
    goes, tool turns do not, ``tools`` cannot be offered (AVR has no field for them), and
    no ToolCall ever comes back. No retries: AVR services answer once.
    """

    name = "avr"

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._service = _Service("LLM", url, LLM_PATH, timeout)
        self._warned_tools = False

    async def chat(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = (), *,
                   call_id: str | None = None) -> AsyncIterator[LlmEvent]:
        """The reply's text as it streams, then LlmDone("stop"); ``call_id`` is the body's uuid."""
        if tools and not self._warned_tools:
            self._warned_tools = True
            log.warning("%s cannot offer tools (%s): an AVR LLM service runs its own, from its "
                        "tools/ folder", self._service.name, ", ".join(tool.name for tool in tools))
        decoder = PromptStreamDecoder()
        async with self._service.post(prompt_body(messages, call_id or str(uuid4())), {}) as response:
            async for data in response.aiter_bytes():
                for delta in decoder.feed(data):
                    yield TextDelta(delta)
            tail = decoder.close()
        for delta in tail:
            yield TextDelta(delta)
        yield LlmDone("stop")


# --- TTS ------------------------------------------------------------------------------


class AvrTts:
    """The TTS protocol on an AVR text-to-speech service (avr-tts-elevenlabs, -deepgram,
    -kokoro, -google-speech-tts...): ``url`` is its base URL or full
    ``/text-to-speech-stream`` URL, ``timeout`` seconds to connect and between chunks.
    The voice is the service's; its 8 kHz audio (or a WAV header's rate) is resampled to
    the rate asked for, with one streaming resampler per utterance."""

    name = "avr"

    def __init__(self, url: str, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._service = _Service("TTS", url, TTS_PATH, timeout)

    async def synthesize(self, text: str, sample_rate: int, *,
                         call_id: str | None = None) -> AsyncIterator[bytes]:
        if sample_rate <= 0:
            raise ValueError(f"sample rate must be positive, not {sample_rate}")
        if not text.strip():
            return  # every AVR TTS service answers 400 "Text is required"
        decoder = TtsAudioDecoder(sample_rate)
        headers = {UUID_HEADER: call_id or str(uuid4())}
        async with self._service.post({"text": text}, headers) as response:
            async for data in response.aiter_bytes():
                pcm = decoder.feed(data)
                if pcm:
                    yield pcm
            tail = decoder.flush()
        if tail:
            yield tail
