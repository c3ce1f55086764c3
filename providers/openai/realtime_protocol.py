"""The OpenAI Realtime API as plain data: JSON-ready dicts out, parsed events in, no I/O.

Two dialects share one wire. The GA interface (``gpt-realtime``, no ``OpenAI-Beta``
header) nests the session (``type: "realtime"``, ``audio.input``/``audio.output``, MIME
audio formats) and names the reply's audio ``response.output_audio.delta``. The preview
interface (``*-realtime-preview`` models, ``OpenAI-Beta: realtime=v1``) has a flat session
(``input_audio_format: "g711_ulaw"``, ``turn_detection``, ``temperature``) and names it
``response.audio.delta``. Everything else used here is spelled the same in both. Field
names follow the ``openai`` package's models (``openai.types.realtime`` and
``openai.types.beta.realtime``), which the tests' fake server validates every event against.

Audio on the wire is G.711 mu-law at 8 kHz for an 8 kHz call: what a PCMU call carries
anyway, so neither direction is resampled and the wire takes a third of PCM's bytes.
Any other call rate goes as PCM16 at 24 kHz, the only PCM rate the service accepts,
through one streaming resampler per direction (:class:`WireAudio`).

Rules this module keeps (the reasons are the service's):

1. A reply's audio is converted per reply: at ``response.done`` the output resampler is
   flushed (else the last ~100 ms of every reply would wait inside the filter for the
   next reply) and the next reply starts a fresh one.
2. Barge-in truncates what the caller heard, clamped to the audio we received of that
   item (the service rejects an ``audio_end_ms`` past the item's end), cancels the
   response if one is running, and drops any audio of that item still arriving.
3. An ``error`` the session survives is logged and dropped: a failed truncate (the
   service answers "already shorter than" when playback outran its count), a cancel
   with no response running, a commit of an empty buffer, a response asked for while
   one runs. Any other error is fatal and raised as :class:`ProviderError` with the
   service's message.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from media.audio import SAMPLE_WIDTH
from media.codecs import PCMU as PCMU_CODEC
from media.resample import DEFAULT_QUALITY, Resampler

from ..base import (
    AgentAudio,
    CallerSpeechStarted,
    CallerSpeechStopped,
    ProviderError,
    ResponseDone,
    SpokenText,
    StsEvent,
    ToolCall,
    ToolSpec,
    Transcript,
)

log = logging.getLogger("trivox.openai.realtime")

Event = dict[str, Any]

TURN_DETECTIONS = ("server_vad", "semantic_vad", "none")
DEFAULT_TRANSCRIPTION_MODEL = "gpt-4o-mini-transcribe"
#: Error codes the session survives (rule 3).
RECOVERABLE_CODES = frozenset({
    "response_cancel_not_active",
    "input_audio_buffer_commit_empty",
    "conversation_already_has_active_response",
})
#: Prefix of our truncate events' ``event_id``: the service quotes it in the error a
#: truncate causes, so that error is known to be harmless (rule 3).
TRUNCATE_ID_PREFIX = "truncate-"
#: Reply items whose received audio length is remembered for clamping a truncate.
TRACKED_ITEMS = 16
#: Quality of the caller -> 24 kHz leg. Upsampling needs no anti-alias filter, and at
#: "QQ" the resampler returns each chunk at once instead of in ~100 ms bursts, which
#: would delay the service's turn detection by as much (media/resample.py).
UPSAMPLE_QUALITY = "QQ"


@dataclass(frozen=True)
class AudioFormat:
    """One wire format, as both dialects name it."""

    mime: str
    rate: int
    preview_name: str
    bytes_per_sample: int

    def ga(self) -> Event:
        """The GA ``audio.input.format`` / ``audio.output.format`` object."""
        return {"type": self.mime, "rate": self.rate} if self.mime == "audio/pcm" else {"type": self.mime}

    def ms(self, size: int) -> float:
        """Playing time of ``size`` bytes of this format."""
        return size / self.bytes_per_sample * 1000 / self.rate


PCMU = AudioFormat("audio/pcmu", 8000, "g711_ulaw", 1)
PCM24 = AudioFormat("audio/pcm", 24000, "pcm16", SAMPLE_WIDTH)


def wire_format(sample_rate: int) -> AudioFormat:
    """mu-law for an 8 kHz call (no resampling, a third of the bytes), else PCM16 24 kHz."""
    return PCMU if sample_rate == PCMU.rate else PCM24


class WireAudio:
    """A call's s16le audio at its rate <-> the session's wire format, both directions.

    Stateful: one per session. Input is one continuous stream; output restarts per reply
    (rule 1): :meth:`end_reply` releases a finished reply's tail, :meth:`drop_reply`
    forgets an interrupted one's.
    """

    def __init__(self, sample_rate: int) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample rate must be positive, not {sample_rate}")
        self.sample_rate = sample_rate
        self.format = wire_format(sample_rate)
        self._mulaw = PCMU_CODEC.transcoder() if self.format is PCMU else None
        self._input = self._new_input()
        self._output = self._new_output()

    def encode(self, pcm: bytes) -> bytes:
        """Caller audio -> wire bytes (fewer than a whole chunk's worth while the filter fills)."""
        if self._mulaw is not None:
            return self._mulaw.encode(pcm)
        return self._input.process(pcm)

    def flush_input(self) -> bytes:
        """The caller audio still inside the input filter, at the end of a turn the client
        commits itself; the next audio starts a fresh filter."""
        if self._mulaw is not None:
            return b""
        tail, self._input = self._input.flush(), self._new_input()
        return tail

    def decode(self, wire: bytes) -> bytes:
        """Reply audio from the wire -> s16le at the call's rate."""
        if self._mulaw is not None:
            return self._mulaw.decode(wire)
        usable = len(wire) - len(wire) % SAMPLE_WIDTH  # a stray odd byte is not a sample
        return self._output.process(wire[:usable])

    def end_reply(self) -> bytes:
        """The finished reply's last samples, still inside the output filter."""
        if self._mulaw is not None:
            return b""
        tail, self._output = self._output.flush(), self._new_output()
        return tail

    def drop_reply(self) -> None:
        """Barge-in: what the output filter holds of the reply will never be played."""
        if self._mulaw is None:
            self._output = self._new_output()

    def _new_input(self) -> Resampler:
        quality = UPSAMPLE_QUALITY if self.sample_rate < PCM24.rate else DEFAULT_QUALITY
        return Resampler(self.sample_rate, PCM24.rate, quality)

    def _new_output(self) -> Resampler:
        return Resampler(PCM24.rate, self.sample_rate)


@dataclass(frozen=True)
class SessionOptions:
    """What the configuration decides about a session; the dialog adds instructions and tools."""

    model: str = "gpt-realtime"
    voice: str = "alloy"
    #: Preview models only: the GA session has no temperature.
    temperature: float | None = None
    max_output_tokens: int | None = None
    #: "server_vad" | "semantic_vad" | "none" (trivox's own VAD: the client commits).
    turn_detection: str = "server_vad"
    #: Model that transcribes the caller's side; "" for no caller transcripts.
    input_transcription: str = DEFAULT_TRANSCRIPTION_MODEL

    def __post_init__(self) -> None:
        if self.turn_detection not in TURN_DETECTIONS:
            raise ProviderError(f"OpenAI Realtime turn_detection {self.turn_detection!r} is not one of "
                                f"{', '.join(TURN_DETECTIONS)}")
        if self.temperature is not None and not self.preview:
            raise ProviderError(f"OpenAI Realtime model {self.model!r} takes no temperature (only the "
                                "preview models do): remove the temperature option")
        if self.max_output_tokens is not None and not 1 <= self.max_output_tokens <= 4096:
            raise ProviderError(f"OpenAI Realtime max_output_tokens must be 1..4096, not {self.max_output_tokens}")

    @property
    def preview(self) -> bool:
        """Preview models speak the beta dialect."""
        return "preview" in self.model


@dataclass(frozen=True)
class _Names:
    """The event names the two dialects spell differently."""

    audio_delta: str
    transcript_delta: str
    transcript_done: str


_GA = _Names("response.output_audio.delta", "response.output_audio_transcript.delta",
             "response.output_audio_transcript.done")
_PREVIEW = _Names("response.audio.delta", "response.audio_transcript.delta", "response.audio_transcript.done")


@dataclass
class _ReplyItem:
    received: int = 0  # wire bytes
    truncated: bool = False


class RealtimeProtocol:
    """One speech-to-speech session's protocol state, for audio at ``sample_rate`` Hz.

    Every method that makes client events returns them as a list of dicts, in the order
    they must be sent; :meth:`receive` turns one server event into the trivox events it
    means (possibly none), with agent audio at the call's rate.
    """

    def __init__(self, options: SessionOptions, instructions: str, tools: Sequence[ToolSpec],
                 sample_rate: int) -> None:
        self.options = options
        self.preview = options.preview
        self.instructions = instructions
        self.tools = tuple(tools)
        self.audio = WireAudio(sample_rate)
        self._names = _PREVIEW if self.preview else _GA
        self._handlers = {
            "input_audio_buffer.speech_started": lambda e: [CallerSpeechStarted()],
            "input_audio_buffer.speech_stopped": lambda e: [CallerSpeechStopped()],
            "conversation.item.input_audio_transcription.delta": self._caller_delta,
            "conversation.item.input_audio_transcription.completed": self._caller_done,
            "conversation.item.input_audio_transcription.failed": self._caller_failed,
            "response.created": self._response_created,
            self._names.audio_delta: self._audio_delta,
            self._names.transcript_delta: self._agent_delta,
            self._names.transcript_done: self._agent_done,
            "response.output_item.done": self._item_done,
            "response.done": self._response_done,
            "error": _check_error,
        }
        self._items: OrderedDict[str, _ReplyItem] = OrderedDict()
        self._texts: dict[str, str] = {}  # item id -> transcript so far
        self._responding = False
        self._uncommitted = False
        self._truncates = 0
        #: The reply item whose audio came last: the one playing, for truncate. Kept
        #: after response.done, since a reply arrives faster than it plays and the
        #: caller often barges in after its last audio came.
        self.current_item_id = ""

    # --- client events --------------------------------------------------------------

    def session_update(self) -> list[Event]:
        session = self._preview_session() if self.preview else self._ga_session()
        return [{"type": "session.update", "session": session}]

    def append_audio(self, pcm: bytes) -> list[Event]:
        """Caller audio (s16le at the call's rate)."""
        return self._append(self.audio.encode(pcm))

    def commit(self) -> list[Event]:
        """End the caller's turn (turn detection "none"): the filter's tail, then commit."""
        events = self._append(self.audio.flush_input())
        self._uncommitted = False
        return [*events, {"type": "input_audio_buffer.commit"}]

    def respond(self, instructions: str = "") -> list[Event]:
        """Ask for a reply now; without server turn detection, commit the caller's turn first."""
        events = self.commit() if self.options.turn_detection == "none" and self._uncommitted else []
        create: Event = {"type": "response.create"}
        if instructions:
            create["response"] = {"instructions": instructions}
        return [*events, create]

    def truncate(self, item_id: str, played_ms: int) -> list[Event]:
        """Barge-in (rule 2): the caller heard ``played_ms`` of ``item_id``."""
        events: list[Event] = [{"type": "response.cancel"}] if self._responding else []
        audio_end_ms = max(0, int(played_ms))
        item = self._items.get(item_id)
        if item is not None:
            audio_end_ms = min(audio_end_ms, int(self.audio.format.ms(item.received)))
            item.truncated = True
        if item_id == self.current_item_id:
            self.audio.drop_reply()
        self._truncates += 1
        events.append({"type": "conversation.item.truncate", "event_id": f"{TRUNCATE_ID_PREFIX}{self._truncates}",
                       "item_id": item_id, "content_index": 0, "audio_end_ms": audio_end_ms})
        return events

    def tool_output(self, call_id: str, output: str) -> list[Event]:
        """A tool's result, and the request that lets the agent go on with it."""
        item = {"type": "function_call_output", "call_id": call_id, "output": output}
        return [{"type": "conversation.item.create", "item": item}, {"type": "response.create"}]

    # --- server events --------------------------------------------------------------

    def receive(self, event: Mapping[str, Any]) -> list[StsEvent]:
        """What one server event means; unknown and bookkeeping events mean nothing."""
        handler = self._handlers.get(event.get("type", ""))
        return handler(event) if handler is not None else []

    def _caller_delta(self, event: Mapping[str, Any]) -> list[StsEvent]:
        return [SpokenText("user", self._grow(event, event.get("delta") or ""), final=False)]

    def _caller_done(self, event: Mapping[str, Any]) -> list[StsEvent]:
        self._texts.pop(event.get("item_id", ""), None)
        return [SpokenText("user", event.get("transcript", ""), final=True)]

    def _caller_failed(self, event: Mapping[str, Any]) -> list[StsEvent]:
        # The model heard the audio itself; only the transcript for the record is lost.
        self._texts.pop(event.get("item_id", ""), None)
        log.warning("OpenAI Realtime could not transcribe the caller: %s", _message(event.get("error")))
        return []

    def _response_created(self, event: Mapping[str, Any]) -> list[StsEvent]:
        self._responding = True
        return []

    def _audio_delta(self, event: Mapping[str, Any]) -> list[StsEvent]:
        item_id = event.get("item_id", "")
        try:
            wire = base64.b64decode(event.get("delta", ""), validate=True)
        except (binascii.Error, ValueError):
            raise ProviderError("OpenAI Realtime sent audio that is not base64") from None
        item = self._items.get(item_id)
        if item is None:
            item = self._items[item_id] = _ReplyItem()
            while len(self._items) > TRACKED_ITEMS:
                self._items.popitem(last=False)
        if item.truncated:
            return []  # in flight when we truncated it: the caller must not hear it
        item.received += len(wire)
        self.current_item_id = item_id
        pcm = self.audio.decode(wire)
        return [AgentAudio(pcm, item_id)] if pcm else []

    def _agent_delta(self, event: Mapping[str, Any]) -> list[StsEvent]:
        return [SpokenText("assistant", self._grow(event, event.get("delta") or ""), final=False)]

    def _agent_done(self, event: Mapping[str, Any]) -> list[StsEvent]:
        self._texts.pop(event.get("item_id", ""), None)
        return [SpokenText("assistant", event.get("transcript", ""), final=True)]

    def _item_done(self, event: Mapping[str, Any]) -> list[StsEvent]:
        # The finished function_call item: the one place both dialects give its name,
        # call id and whole arguments together (preview's arguments.done has no name).
        item = event.get("item") or {}
        if item.get("type") != "function_call":
            return []
        return [ToolCall(item.get("call_id", ""), item.get("name", ""), item.get("arguments", ""))]

    def _response_done(self, event: Mapping[str, Any]) -> list[StsEvent]:
        self._responding = False
        response = event.get("response") or {}
        if response.get("status") == "failed":
            details = response.get("status_details") or {}
            raise ProviderError(f"OpenAI Realtime reply failed: {_message(details.get('error'))}")
        events: list[StsEvent] = []
        tail = self.audio.end_reply()
        if tail:
            events.append(AgentAudio(tail, self.current_item_id))
        return [*events, ResponseDone()]

    # --- helpers --------------------------------------------------------------------

    def _append(self, wire: bytes) -> list[Event]:
        if not wire:
            return []
        self._uncommitted = True
        return [append_event(wire)]

    def _grow(self, event: Mapping[str, Any], delta: str) -> str:
        item_id = event.get("item_id", "")
        text = self._texts[item_id] = self._texts.get(item_id, "") + delta
        return text

    def _tools(self) -> list[Event]:
        return [{"type": "function", "name": tool.name, "description": tool.description,
                 "parameters": dict(tool.parameters)} for tool in self.tools]

    def _instructions(self) -> Event:
        # An empty string would clear the service's default instructions, not keep them.
        return {"instructions": self.instructions} if self.instructions else {}

    def _turn_detection(self) -> Event | None:
        kind = self.options.turn_detection
        return None if kind == "none" else {"type": kind}

    def _ga_session(self) -> Event:
        wire = self.audio.format.ga()
        audio_in: Event = {"format": wire, "turn_detection": self._turn_detection()}
        if self.options.input_transcription:
            audio_in["transcription"] = {"model": self.options.input_transcription}
        session: Event = {
            "type": "realtime",
            "output_modalities": ["audio"],
            "audio": {"input": audio_in, "output": {"format": wire, "voice": self.options.voice}},
            "tools": self._tools(),
            **self._instructions(),
        }
        if self.options.max_output_tokens is not None:
            session["max_output_tokens"] = self.options.max_output_tokens
        return session

    def _preview_session(self) -> Event:
        wire = self.audio.format.preview_name
        session: Event = {
            "modalities": ["audio", "text"],
            **self._instructions(),
            "voice": self.options.voice,
            "input_audio_format": wire,
            "output_audio_format": wire,
            "turn_detection": self._turn_detection(),
            "tools": self._tools(),
        }
        if self.options.input_transcription:
            session["input_audio_transcription"] = {"model": self.options.input_transcription}
        if self.options.temperature is not None:
            session["temperature"] = self.options.temperature
        if self.options.max_output_tokens is not None:
            session["max_response_output_tokens"] = self.options.max_output_tokens
        return session


class TranscriptionProtocol:
    """One Realtime transcription session (GA ``type: "transcription"``): the caller's
    audio in, the model's interim and final text out. Turn detection is off: trivox's
    VAD ends the utterance and the client commits it.
    """

    def __init__(self, model: str, language: str, sample_rate: int) -> None:
        self.model = model
        self.language = language
        self.audio = WireAudio(sample_rate)
        self._text = ""

    def session_update(self) -> list[Event]:
        transcription: Event = {"model": self.model}
        if self.language:
            transcription["language"] = self.language
        audio_in = {"format": self.audio.format.ga(), "transcription": transcription, "turn_detection": None}
        return [{"type": "session.update", "session": {"type": "transcription", "audio": {"input": audio_in}}}]

    def append_audio(self, pcm: bytes) -> list[Event]:
        wire = self.audio.encode(pcm)
        return [append_event(wire)] if wire else []

    def commit(self) -> list[Event]:
        tail = self.audio.flush_input()
        return [*([append_event(tail)] if tail else []), {"type": "input_audio_buffer.commit"}]

    def receive(self, event: Mapping[str, Any]) -> Transcript | None:
        """The interim text so far, the final text, or None for a bookkeeping event."""
        kind = event.get("type", "")
        if kind == "conversation.item.input_audio_transcription.delta":
            self._text += event.get("delta") or ""
            return Transcript(self._text, final=False)
        if kind == "conversation.item.input_audio_transcription.completed":
            return Transcript(event.get("transcript", ""), final=True)
        if kind == "conversation.item.input_audio_transcription.failed":
            raise ProviderError(f"OpenAI Realtime transcription failed: {_message(event.get('error'))}")
        if kind == "error":
            error = event.get("error") or {}
            if error.get("code") == "input_audio_buffer_commit_empty":
                return Transcript("", final=True)  # too little audio to hold a word
            _check_error(event)
        return None


def append_event(wire: bytes) -> Event:
    return {"type": "input_audio_buffer.append", "audio": base64.b64encode(wire).decode("ascii")}


def _check_error(event: Mapping[str, Any]) -> list[StsEvent]:
    """Rule 3: log and drop an error the session survives, raise any other."""
    error = event.get("error") or {}
    cause = error.get("event_id") or ""
    if error.get("code") in RECOVERABLE_CODES or cause.startswith(TRUNCATE_ID_PREFIX):
        log.debug("OpenAI Realtime: ignored %s (%s)", _message(error), cause or error.get("code"))
        return []
    raise ProviderError(f"OpenAI Realtime error: {_message(error)}")


def _message(error: Any) -> str:
    if not isinstance(error, Mapping):
        return "no details given"
    message = error.get("message") or "no details given"
    code = error.get("code")
    return f"{message} ({code})" if code else message
