"""The wire formats of AVR (Agent Voice Response) connectors, sans-IO.

AVR Core talks to its connectors over four de-facto protocols; trivox speaks them as
the client, so any AVR connector plugs in. Nothing here does I/O: each piece takes what
was received (a WebSocket message, the bytes of a response) and returns typed events
and what to send, so it is tested with plain data; ``sts.py`` and ``http.py`` are the
thin Trio adapters. Where each shape is defined (agentvoiceresponse repositories):

STS, one WebSocket per call, JSON text messages (avr-docs
``avr-sts-integration-implementation.md`` and ``avr-sts-xai.md``; servers in
avr-sts-gemini, avr-sts-xai, avr-sts-elevenlabs, avr-sts-deepgram ``index.js``):

    client -> connector  {"type": "init", "uuid": "<call id>"}      first, once
                         {"type": "audio", "audio": "<base64>"}     s16le 8 kHz mono, 20 ms
                         {"type": "dtmf_digit", "digit": "5"}       a key the caller pressed
    connector -> client  {"type": "audio", "audio": "<base64>"}     s16le 8 kHz mono
                         {"type": "interruption"}                   the caller barged in
                         {"type": "transcript", "role": "user"|"agent", "text": "..."}
                         {"type": "error", "message": "..."}

  There is no message for tool calls or results (a connector runs its own tools from
  its ``avr_tools/`` and ``tools/`` folders, avr-docs ``avr-function-calls.md``), none
  for truncating a reply, none that ends a reply, and none that asks the agent to speak
  (the connectors greet on their own once initialised). Instructions and voice are the
  connector's environment (``OPENAI_INSTRUCTIONS``, ``GEMINI_INSTRUCTIONS``...), not
  part of the protocol.

AVR Core's own source is no longer published (it ships as a Docker image); its client
side below is that of ``asr.js``, ``llm.js`` and ``tts.js`` as kept by its forks
(Mirindra-lan/avr-core, mldev92/avr-core_app), checked against the servers.

ASR, ``POST /speech-to-text-stream`` (avr-core ``asr.js``; servers avr-asr-vosk,
avr-asr-soniox, avr-asr-google-cloud-speech ``index.js``): headers ``Content-Type: audio/l16``, ``Transfer-Encoding: chunked``,
``X-UUID: <call id>``; the body is raw s16le 8 kHz mono, streamed. The service answers
``text/event-stream`` but writes each finished transcript segment as bare UTF-8 text,
one ``res.write`` (so one HTTP chunk) per segment, no ``data:`` framing, no delimiter;
avr-core takes each received chunk as one transcript. The response ends when the
request body does. AVR Core keeps one such request open for a whole call.

LLM, ``POST /prompt-stream`` (avr-core's ``llm.js``; servers avr-llm-anthropic,
avr-llm-openrouter, avr-llm-openai ``index.js``): JSON ``{"uuid": ..., "message": <the
caller's last words>, "messages": [{"role": ..., "content": ...}, ...]}`` (the services
read ``messages``, avr-llm-anthropic also ``uuid``). The answer is a stream of JSON
objects written back to back with no separator, ``{"type": "text", "content": "..."}``
each; the stream's end is the reply's end. An older avr-llm-openai (2024) writes the
bare text instead. Tool calls never appear: the service runs them and streams the
tool's result as text.

TTS, ``POST /text-to-speech-stream`` (avr-core's ``tts.js``; servers
avr-tts-elevenlabs, avr-tts-deepgram, avr-tts-kokoro, avr-tts-cartesia ``index.js`` or
``server.js``): JSON ``{"text": "..."}`` (avr-tts-cartesia also reads ``X-UUID``); the
answer is raw s16le 8 kHz mono (``audio/l16``), streamed in chunks of any size.
avr-tts-google-speech-tts answers Google's LINEAR16, which is a WAV file: a RIFF header
first, whose rate then applies.

Errors from the HTTP services are a 4xx/5xx status with ``{"message": ...}`` (or
``{"error": ...}``) as the body.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from media.audio import SAMPLE_WIDTH, frame_bytes
from media.resample import Resampler

from ..base import AgentAudio, CallerSpeechStarted, Message, SpokenText

#: Every AVR connector hears and speaks s16le mono at 8 kHz (Asterisk's slin).
AVR_RATE = 8000
#: The STS audio message carries one 20 ms frame (avr-sts-integration-implementation.md:
#: "Chunk Size: Recommended 20ms (160 samples)").
AVR_FRAME_BYTES = frame_bytes(AVR_RATE)

ASR_PATH = "/speech-to-text-stream"
LLM_PATH = "/prompt-stream"
TTS_PATH = "/text-to-speech-stream"

#: The ASR request's headers as avr-core sends them (the body's length is unknown).
ASR_CONTENT_TYPE = "audio/l16"
UUID_HEADER = "X-UUID"

#: DTMF keys a telephone sends (RFC 4733 events 0-15).
DTMF_DIGITS = frozenset("0123456789*#ABCD")

#: Longest error detail kept from a service's answer (it goes into one log line).
MAX_DETAIL_CHARS = 200


class AvrProtocolError(Exception):
    """The connector sent something the AVR protocol does not allow (the adapter turns
    it into a ProviderError naming the service)."""


def endpoint(url: str, path: str) -> str:
    """The service URL to call: ``url`` as given when it has a path (AVR's own
    ``ASR_URL=http://host:6010/speech-to-text-stream``), else ``url`` + ``path`` (a base
    URL, ``http://host:6010``)."""
    scheme, host, url_path, query, fragment = urlsplit(url)
    if url_path in ("", "/"):
        url_path = path
    return urlunsplit((scheme, host, url_path, query, fragment))


def shown(url: str) -> str:
    """``url`` fit for a log line or an error: without any ``user:password@``."""
    scheme, netloc, path, query, fragment = urlsplit(url)
    return urlunsplit((scheme, netloc.rpartition("@")[2], path, query, fragment))


def resampler(in_rate: int, out_rate: int) -> Resampler:
    """The streaming resampler of one AVR audio leg, picked for latency.

    Upsampling (8 kHz to a 16 kHz call) uses soxr's "QQ", cubic interpolation: it lags by
    4 samples where a filtered one holds ~100 ms, and AVR marks no reply's end at which
    a filter's tail could be flushed. Downsampling needs the anti-alias filter: "LQ"
    (16-bit precision, telephone bandwidth), ~60-80 ms behind (media/resample.py).
    """
    return Resampler(in_rate, out_rate, "QQ" if out_rate > in_rate else "LQ")


class _Framer:
    """Cuts a stream of s16le into AVR's 20 ms frames, keeping the remainder."""

    def __init__(self) -> None:
        self._pending = bytearray()

    def frames(self, pcm: bytes) -> list[bytes]:
        self._pending += pcm
        cut = len(self._pending) - len(self._pending) % AVR_FRAME_BYTES
        whole, self._pending = bytes(self._pending[:cut]), self._pending[cut:]
        return [whole[i:i + AVR_FRAME_BYTES] for i in range(0, cut, AVR_FRAME_BYTES)]


class _SampleCarry:
    """Joins received bytes into whole 16-bit samples (a chunk may end mid-sample)."""

    def __init__(self) -> None:
        self._odd = b""

    def whole(self, data: bytes) -> bytes:
        data = self._odd + data
        cut = len(data) - len(data) % SAMPLE_WIDTH
        self._odd = data[cut:]
        return data[:cut]


# --- STS ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ConnectorError:
    """The connector reported an error (``{"type": "error"}``); the session is over."""

    message: str


StsReceived = AgentAudio | CallerSpeechStarted | SpokenText | ConnectorError

#: The connectors' transcript roles and trivox's (SpokenText): AVR says "agent".
_ROLES = {"user": "user", "agent": "assistant", "assistant": "assistant"}


class StsConnection:
    """One AVR STS WebSocket session as the client, at the call's sample rate.

    Caller audio is converted to 8 kHz (one streaming resampler) and sent as 20 ms
    frames; agent audio is converted back to the call's rate (another). An interruption
    starts the agent leg's resampler afresh: what it still holds belongs to the reply the
    caller just cut off. :meth:`end` releases the agent leg's last samples once the
    connector has closed the session cleanly.
    """

    def __init__(self, call_rate: int, uuid: str) -> None:
        if not uuid:
            raise ValueError("an AVR STS session needs a uuid")
        self.call_rate = call_rate
        self.uuid = uuid
        self._to_avr = resampler(call_rate, AVR_RATE)
        self._from_avr = resampler(AVR_RATE, call_rate)
        self._framer = _Framer()
        self._carry = _SampleCarry()
        self._ended = False

    def start(self) -> str:
        """The first message: ``init`` with the session's uuid."""
        return json.dumps({"type": "init", "uuid": self.uuid})

    def send_audio(self, pcm: bytes) -> list[str]:
        """Caller audio at the call's rate: the ``audio`` messages it makes (maybe none yet)."""
        return [json.dumps({"type": "audio", "audio": base64.b64encode(frame).decode("ascii")})
                for frame in self._framer.frames(self._to_avr.process(pcm))]

    def send_digit(self, digit: str) -> str:
        """A DTMF key the caller pressed: the ``dtmf_digit`` message."""
        if len(digit) != 1 or digit.upper() not in DTMF_DIGITS:
            raise ValueError(f"not a DTMF digit: {digit!r} (0-9, *, #, A-D)")
        return json.dumps({"type": "dtmf_digit", "digit": digit.upper()})

    def receive(self, message: str | bytes) -> list[StsReceived]:
        """What one message from the connector means; unknown types are skipped (a newer
        connector may send more), so are transcripts without text."""
        body = _json_object(message)
        kind = body.get("type")
        if kind == "audio":
            pcm = self._carry.whole(_base64(body.get("audio")))
            out = self._from_avr.process(pcm)
            return [AgentAudio(out)] if out else []
        if kind == "interruption":
            self._from_avr = resampler(AVR_RATE, self.call_rate)
            self._carry = _SampleCarry()
            return [CallerSpeechStarted()]
        if kind == "transcript":
            role = _ROLES.get(str(body.get("role")))
            if role is None:
                raise AvrProtocolError(f"transcript of unknown role {body.get('role')!r}")
            text = body.get("text")
            return [SpokenText(role, text)] if isinstance(text, str) and text else []
        if kind == "error":
            return [ConnectorError(str(body.get("message") or "unspecified error"))]
        return []

    def end(self) -> list[AgentAudio]:
        """The session ended cleanly: the agent audio still inside the resampler (once)."""
        if self._ended:
            return []
        self._ended = True
        tail = self._from_avr.flush()
        return [AgentAudio(tail)] if tail else []


def _json_object(message: str | bytes) -> dict[str, Any]:
    try:
        body = json.loads(message)
    except (ValueError, UnicodeDecodeError) as exc:
        raise AvrProtocolError(f"a message that is not JSON ({exc})") from None
    if not isinstance(body, dict):
        raise AvrProtocolError(f"a message that is not a JSON object: {body!r:.60}")
    return body


def _base64(value: object) -> bytes:
    if not isinstance(value, str):
        raise AvrProtocolError("an audio message without base64 audio")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise AvrProtocolError(f"audio that is not base64 ({exc})") from None


# --- ASR ------------------------------------------------------------------------------


class TranscriptAssembler:
    """The transcript of one ASR response: its segments, one per HTTP chunk.

    Each segment a service finishes is one chunk of the chunked response (one
    ``res.write``), and segments carry no separator, so chunk borders are word borders:
    "hello there" and "how are you" must not become "hello therehow are you". A
    response without chunked framing is one segment.
    """

    def __init__(self) -> None:
        self._segments: list[str] = []
        self._current = bytearray()

    def feed(self, data: bytes, *, chunk_start: bool = False, chunk_end: bool = False) -> None:
        """The bytes of one HTTP data event and whether it starts or ends a chunk."""
        if chunk_start:
            self._close_segment()
        self._current += data
        if chunk_end:
            self._close_segment()

    def text(self) -> str:
        """Every segment so far, each stripped, joined by single spaces."""
        self._close_segment()
        return " ".join(segment for segment in self._segments if segment)

    def _close_segment(self) -> None:
        if self._current:
            self._segments.append(self._current.decode("utf-8", errors="replace").strip())
            self._current = bytearray()


# --- LLM ------------------------------------------------------------------------------


def prompt_body(messages: Sequence[Message], uuid: str) -> dict[str, Any]:
    """The prompt-stream request for an OpenAI-shaped chat history.

    AVR services pass ``messages`` on to their model as ``{"role", "content"}`` pairs
    (avr-llm-anthropic maps "system" to "user"), so only text turns go: tool calls and
    tool results have no AVR form (the service runs its own tools), and a content list
    of parts becomes its text parts joined.
    """
    turns = []
    for message in messages:
        role, text = message.get("role"), _text_of(message.get("content"))
        if role in ("system", "user", "assistant") and text:
            turns.append({"role": role, "content": text})
    last_user = next((turn["content"] for turn in reversed(turns) if turn["role"] == "user"), "")
    return {"uuid": uuid, "message": last_user, "messages": turns}


def _text_of(content: object) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "".join(part.get("text", "") for part in content
                       if isinstance(part, Mapping) and part.get("type") == "text")
    return ""


class PromptStreamDecoder:
    """The reply of a prompt-stream response, as text deltas.

    The body is JSON objects back to back (``{"type":"text","content":"Hel"}{"type":...``),
    split across reads anywhere, even inside a UTF-8 character. A body whose first
    character is not ``{`` is the older bare-text form and is passed on as it comes.
    Objects of other types (avr-core also knows ``"audio"``, which trivox's LLM protocol
    cannot carry) are skipped.
    """

    def __init__(self) -> None:
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._buffer = ""
        self._json: bool | None = None  # undecided until the first non-blank character
        self._decoder = json.JSONDecoder()

    def feed(self, data: bytes) -> list[str]:
        """More of the body: the deltas now complete."""
        return self._take(self._utf8.decode(data))

    def close(self) -> list[str]:
        """The body ended: the last deltas; a JSON object cut off is an error."""
        deltas = self._take(self._utf8.decode(b"", final=True))
        if self._json and self._buffer.strip():
            raise AvrProtocolError(f"the reply ended inside a JSON object: {self._buffer:.60}")
        return deltas

    def _take(self, text: str) -> list[str]:
        self._buffer += text
        if self._json is None:
            stripped = self._buffer.lstrip()
            if not stripped:
                return []
            self._json = stripped.startswith("{")
        if not self._json:
            delta, self._buffer = self._buffer, ""
            return [delta] if delta else []
        deltas = []
        while True:
            rest = self._buffer.lstrip()
            if not rest:
                self._buffer = ""
                return deltas
            try:
                item, end = self._decoder.raw_decode(rest)
            except ValueError:  # incomplete: wait for more (close() tells a cut-off one)
                self._buffer = rest
                return deltas
            self._buffer = rest[end:]
            if not isinstance(item, dict):
                raise AvrProtocolError(f"a reply item that is not a JSON object: {item!r:.60}")
            content = item.get("content")
            if item.get("type") == "text" and isinstance(content, str) and content:
                deltas.append(content)


# --- TTS ------------------------------------------------------------------------------

_RIFF_HEADER = struct.Struct("<4sI4s")
_CHUNK_HEADER = struct.Struct("<4sI")
_FMT = struct.Struct("<HHIIHH")
WAVE_FORMAT_PCM = 1


class TtsAudioDecoder:
    """The audio of one text-to-speech response, at the rate the caller asked for.

    Raw s16le at 8 kHz as it comes, or, when the body starts with a RIFF header (Google's
    LINEAR16), the samples after it at the header's rate. One streaming resampler for the
    whole response; :meth:`flush` releases its tail at the end.
    """

    def __init__(self, out_rate: int) -> None:
        self.out_rate = out_rate
        self._head = b""  # bytes held until we know whether a WAV header leads
        self._resampler: Resampler | None = None
        self._carry = _SampleCarry()

    def feed(self, data: bytes) -> bytes:
        """More of the body: the audio now ready (maybe none)."""
        if self._resampler is None:
            self._head += data
            started = self._start(final=False)
            if not started:
                return b""
            data, self._head = self._head, b""
        assert self._resampler is not None
        return self._resampler.process(self._carry.whole(data))

    def flush(self) -> bytes:
        """The body ended: the rest of the audio."""
        out = b""
        if self._resampler is None:
            self._start(final=True)
            data, self._head = self._head, b""
            assert self._resampler is not None
            out = self._resampler.process(self._carry.whole(data))
        return out + self._resampler.flush()

    def _start(self, *, final: bool) -> bool:
        """Decide the format from ``_head``; on success ``_head`` holds only audio."""
        if not self._head.startswith(b"RIFF"):
            if b"RIFF".startswith(self._head) and not final:
                return False  # too short to tell
            self._resampler = resampler(AVR_RATE, self.out_rate)
            return True
        parsed = _wav_audio(self._head)
        if parsed is None:
            if final:
                raise AvrProtocolError("the audio ended inside its WAV header")
            return False
        rate, offset = parsed
        self._head = self._head[offset:]
        self._resampler = resampler(rate, self.out_rate)
        return True


def _wav_audio(head: bytes) -> tuple[int, int] | None:
    """(sample rate, offset of the samples) of a WAV file's start; None if incomplete."""
    if len(head) < _RIFF_HEADER.size:
        return None
    _, _, wave = _RIFF_HEADER.unpack_from(head)
    if wave != b"WAVE":
        raise AvrProtocolError("audio that starts with RIFF but is not WAVE")
    offset, rate = _RIFF_HEADER.size, None
    while len(head) >= offset + _CHUNK_HEADER.size:
        name, size = _CHUNK_HEADER.unpack_from(head, offset)
        offset += _CHUNK_HEADER.size
        if name == b"data":
            if rate is None:
                raise AvrProtocolError("a WAV file whose samples come before their format")
            return rate, offset
        if len(head) < offset + size:
            return None
        if name == b"fmt ":
            kind, channels, rate, _, _, bits = _FMT.unpack_from(head, offset)
            if (kind, channels, bits) != (WAVE_FORMAT_PCM, 1, 16):
                raise AvrProtocolError(f"WAV audio that is not 16-bit mono PCM "
                                       f"(format {kind}, {channels} channels, {bits} bits)")
        offset += size + size % 2  # chunks are padded to an even length
    return None


# --- HTTP errors ----------------------------------------------------------------------


def error_detail(body: bytes) -> str:
    """One line from a failed request's body: its ``message`` (or ``error``) when JSON."""
    text = body.decode("utf-8", errors="replace").strip()
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        found = parsed.get("message") or parsed.get("error")
        if isinstance(found, str):
            text = found
    line = " ".join(text.split())
    return line[:MAX_DETAIL_CHARS - 3] + "..." if len(line) > MAX_DETAIL_CHARS else line
