"""OpenAI transcription (``/audio/transcriptions``) as the ASR protocol, one request per
utterance.

The endpoint takes a whole audio file, so a stream only collects the utterance the VAD
cut, and :meth:`OpenAIUtterance.finish` sends it as a WAV file at the stream's own rate
(16-bit mono, wrapped by the stdlib ``wave`` module): the service resamples itself, and
8 kHz telephone audio gains nothing from being upsampled first. There are no interim
transcripts; the one result is final. Speech that is too short to transcribe (a click
the VAD let through) is answered with an empty transcript and no request, rather than
the 400 the service gives audio under 0.1 s.
"""

from __future__ import annotations

import io
import wave
from typing import Any

import trio

from media.audio import SAMPLE_WIDTH

from ..base import ProviderError, Transcript
from .client import OpenAISettings
from .llm import failure

#: The service refuses shorter audio.
MIN_AUDIO_MS = 100


class OpenAIUtterance:
    """One utterance being collected; sent when it is finished. A single task feeds it."""

    def __init__(self, transcriber: OpenAITranscriber, sample_rate: int) -> None:
        self._transcriber = transcriber
        self._sample_rate = sample_rate
        self._pcm = bytearray()
        self._open = True

    async def send_audio(self, pcm: bytes) -> None:
        if not self._open:
            raise trio.ClosedResourceError("this recognition stream is finished or closed")
        if len(pcm) % SAMPLE_WIDTH:
            raise ValueError(f"PCM length {len(pcm)} is not a whole number of 16-bit samples")
        self._pcm += pcm

    async def finish(self) -> Transcript:
        """Transcribe the utterance: the final transcript (empty for no or too little audio)."""
        if not self._open:
            raise trio.ClosedResourceError("this recognition stream is finished or closed")
        self._open = False
        pcm, self._pcm = bytes(self._pcm), bytearray()
        if len(pcm) < self._sample_rate * SAMPLE_WIDTH * MIN_AUDIO_MS // 1000:
            return Transcript("", final=True)
        text = await self._transcriber.transcribe(wav_file(pcm, self._sample_rate))
        return Transcript(text, final=True)

    async def aclose(self) -> None:
        """Drop the utterance; safe at any point and more than once."""
        self._open = False
        self._pcm = bytearray()


class OpenAITranscriber:
    """The ASR protocol on ``settings``' transcription endpoint.

    ``language`` (ISO 639-1, e.g. "en") and ``prompt`` (names, jargon, the expected style)
    are sent only when set; without a language the service detects it per utterance.
    """

    name = "openai"

    def __init__(self, settings: OpenAISettings, model: str = "gpt-4o-mini-transcribe",
                 language: str = "", prompt: str = "") -> None:
        if not model:
            raise ProviderError("OpenAI transcription needs a model (for example gpt-4o-mini-transcribe)")
        self._settings = settings
        self._service = f"OpenAI transcription model {model!r}"
        self._options: dict[str, Any] = {"model": model}
        if language:
            self._options["language"] = language
        if prompt:
            self._options["prompt"] = prompt
        self._client = settings.async_client()

    async def open_stream(self, sample_rate: int) -> OpenAIUtterance:
        if sample_rate <= 0:
            raise ValueError(f"sample rate must be positive, not {sample_rate}")
        return OpenAIUtterance(self, sample_rate)

    async def transcribe(self, wav: bytes) -> str:
        """The text of one WAV file."""
        from openai import OpenAIError

        try:
            result = await self._client.audio.transcriptions.create(
                file=("utterance.wav", wav, "audio/wav"), **self._options)
        except OpenAIError as exc:
            raise failure(self._service, self._settings, exc) from None
        return result.text.strip()


def wav_file(pcm: bytes, sample_rate: int) -> bytes:
    """``pcm`` (s16le mono) as the bytes of a WAV file."""
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(SAMPLE_WIDTH)
        writer.setframerate(sample_rate)
        writer.writeframes(pcm)
    return out.getvalue()
