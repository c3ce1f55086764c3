"""OpenAI speech (``/audio/speech``) as the TTS protocol.

The service is asked for ``pcm``: headerless s16le mono at 24 kHz, the one format it can
stream with nothing to decode. It sends the audio as it synthesises it, so each chunk is
resampled to the caller's rate and yielded as it arrives, through one streaming
resampler per utterance: the first words play while the rest is still being made. HTTP
chunks need not end on a sample boundary; an odd byte waits for the next chunk.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from media.audio import SAMPLE_WIDTH
from media.resample import Resampler

from ..base import ProviderError
from .client import OpenAISettings
from .llm import closing, failure

#: What ``response_format="pcm"`` is.
SPEECH_RATE = 24000
#: The speech API's range of ``speed``.
SPEEDS = (0.25, 4.0)


class OpenAITTS:
    """The TTS protocol on ``settings``' speech endpoint.

    ``instructions`` (a voice persona: tone, accent, pace) only works with the
    gpt-4o-*-tts models and is sent only when set; ``speed`` is sent only when set.
    """

    name = "openai"

    def __init__(self, settings: OpenAISettings, model: str = "gpt-4o-mini-tts", voice: str = "alloy",
                 instructions: str = "", speed: float | None = None) -> None:
        low, high = SPEEDS
        if speed is not None and not low <= speed <= high:
            raise ProviderError(f"OpenAI speech speed must be {low:g}..{high:g}, not {speed}")
        if not model or not voice:
            raise ProviderError("OpenAI speech needs a model and a voice (for example gpt-4o-mini-tts, alloy)")
        self._settings = settings
        self._service = f"OpenAI speech model {model!r}"
        self._options: dict[str, Any] = {"model": model, "voice": voice, "response_format": "pcm"}
        if instructions:
            self._options["instructions"] = instructions
        if speed is not None:
            self._options["speed"] = speed
        self._client = settings.async_client()

    async def synthesize(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        from httpx2 import RequestError
        from openai import OpenAIError

        if not text.strip():  # the service refuses empty input
            return
        resampler = Resampler(SPEECH_RATE, sample_rate)
        carry = b""  # half a sample, waiting for its other byte
        request = self._client.audio.speech.with_streaming_response.create(input=text, **self._options)
        started = False
        try:
            async with request as response, closing(response):
                started = True
                async for chunk in response.iter_bytes():
                    data = carry + chunk
                    whole = len(data) - len(data) % SAMPLE_WIDTH
                    carry = data[whole:]
                    pcm = resampler.process(data[:whole])
                    if pcm:
                        yield pcm
        except (OpenAIError, RequestError) as exc:  # the body's bytes come from httpx2 unwrapped
            raise failure(self._service, self._settings, exc, during_reply=started) from None
        tail = resampler.flush()
        if tail:
            yield tail
