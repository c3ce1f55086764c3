"""The provider protocols (DESIGN.md, "Providers").

Each kind of provider is one small protocol, so the dialog runtime never knows whose
engine or service it talks to. Audio is always s16le mono at a rate the caller names;
a provider resamples to whatever its engine needs, with a streaming resampler.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


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
