"""The provider protocols (DESIGN.md, "Providers").

Each kind of provider is one small protocol, so the dialog runtime never knows whose
service it talks to. Audio is always s16le mono at a rate the caller names; a provider
resamples to whatever its engine needs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol


class ProviderError(Exception):
    """A provider cannot work as configured; the message is one line a user can act on."""


@dataclass(frozen=True)
class Transcript:
    text: str
    final: bool


class AsrStream(Protocol):
    """One utterance being recognised."""

    async def send_audio(self, pcm: bytes) -> None:
        """More caller audio at the rate the stream was opened with."""

    async def finish(self) -> Transcript:
        """The caller stopped talking: the final transcript (possibly empty)."""

    async def aclose(self) -> None:
        """Release the stream; safe to call at any point, more than once."""


class ASR(Protocol):
    name: str

    async def open_stream(self, sample_rate: int) -> AsrStream:
        """A new recognition stream for audio at ``sample_rate`` Hz."""


class TTS(Protocol):
    name: str

    def synthesize(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        """Speech for ``text`` at ``sample_rate`` Hz, chunk by chunk as it is made.

        Cancelling the consumer stops the synthesis promptly.
        """
