"""The provider protocols (DESIGN.md, "Providers").

Each kind of provider is one small protocol, so the dialog runtime never knows whose
engine or service it talks to. Audio is always s16le mono at a rate the caller names;
a provider resamples to whatever its engine needs, with a streaming resampler.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol


class ProviderError(Exception):
    """A provider cannot work as configured or failed; the message is one line a user can act on."""


@dataclass(frozen=True)
class Transcript:
    """What was recognised; ``final`` once the provider will not revise it."""

    text: str
    final: bool


class AsrStream(Protocol):
    """One utterance being recognised, fed by one task."""

    async def send_audio(self, pcm: bytes) -> None:
        """More of the utterance: s16le at the rate the stream was opened with."""

    async def finish(self) -> Transcript:
        """The caller stopped talking: the final transcript (its text may be empty)."""

    async def aclose(self) -> None:
        """Release the stream; safe at any point (mid-utterance too) and more than once."""


class ASR(Protocol):
    name: str

    async def open_stream(self, sample_rate: int) -> AsrStream:
        """A new recognition stream for audio at ``sample_rate`` Hz."""


class TTS(Protocol):
    name: str

    def synthesize(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        """Speech for ``text``: s16le chunks at ``sample_rate`` Hz, each yielded as soon as it is made.

        An async generator. Cancelling the consumer stops the synthesis promptly, and one
        that is abandoned without being closed holds nothing a later call needs.
        """


# --- LLM ------------------------------------------------------------------------------

#: One chat message as the OpenAI chat API shapes it: {"role": ..., "content": ...}, and
#: for tool use {"role": "assistant", "tool_calls": [...]} / {"role": "tool", ...}.
Message = Mapping[str, Any]


@dataclass(frozen=True)
class ToolSpec:
    """A function the model may call: its name, what it is for, and a JSON schema of its
    arguments (an "object" schema)."""

    name: str
    description: str
    parameters: Mapping[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})


@dataclass(frozen=True)
class TextDelta:
    """The next piece of the model's reply text."""

    text: str


@dataclass(frozen=True)
class ToolCall:
    """A complete call of a tool: emitted once its arguments (a JSON text) are whole."""

    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class LlmDone:
    """The reply is over; ``finish_reason`` as the service gave it ("stop", "tool_calls", "length")."""

    finish_reason: str


LlmEvent = TextDelta | ToolCall | LlmDone


class LLM(Protocol):
    name: str

    def chat(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = ()) -> AsyncIterator[LlmEvent]:
        """Stream the model's reply to ``messages``: TextDeltas as they come, each ToolCall
        once whole, then one LlmDone.

        An async generator. Cancelling the consumer closes the request promptly. Retries
        (bounded) happen only before the first event: once text has been yielded, a
        failure is a ProviderError, since the caller may already have heard it.
        """


# --- STS (speech to speech) -----------------------------------------------------------


@dataclass(frozen=True)
class AgentAudio:
    """Agent speech, s16le at the session's rate."""

    pcm: bytes
    #: The service's id of the reply item this audio belongs to (for truncate).
    item_id: str = ""


@dataclass(frozen=True)
class CallerSpeechStarted:
    """The service heard the caller start talking (barge-in, when the agent is speaking)."""


@dataclass(frozen=True)
class CallerSpeechStopped:
    """The service heard the caller stop talking."""


@dataclass(frozen=True)
class SpokenText:
    """A transcript of one side: ``role`` "user" (the caller) or "assistant" (the agent)."""

    role: str
    text: str
    final: bool = True


@dataclass(frozen=True)
class ResponseDone:
    """The agent finished a reply (all its audio has been sent to us)."""


StsEvent = AgentAudio | CallerSpeechStarted | CallerSpeechStopped | SpokenText | ToolCall | ResponseDone


class StsSession(Protocol):
    """One call's live speech-to-speech conversation."""

    async def send_audio(self, pcm: bytes) -> None:
        """Caller audio: s16le at the session's rate, any chunk size."""

    def events(self) -> AsyncIterator[StsEvent]:
        """What the service says, in order, until the session ends. A dropped connection
        or an error the session cannot recover from is a ProviderError."""

    async def truncate(self, item_id: str, played_ms: int) -> None:
        """Barge-in: the caller heard only ``played_ms`` of reply ``item_id``; the service
        forgets the rest, and stops sending audio of it."""

    async def tool_result(self, call_id: str, output: str) -> None:
        """Answer a ToolCall and let the agent go on."""

    async def respond(self, instructions: str = "") -> None:
        """Ask the agent to speak now (a greeting), optionally with one-off instructions."""


class STS(Protocol):
    name: str

    def connect(self, sample_rate: int, instructions: str, tools: Sequence[ToolSpec] = (), *,
                call_id: str | None = None) -> AbstractAsyncContextManager[StsSession]:
        """A session for audio at ``sample_rate`` Hz, closed when the context exits.

        ``call_id`` names the call to a service that keys its sessions on it (AVR's
        connectors do); others may ignore it.
        """
