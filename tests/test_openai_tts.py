"""OpenAITTS with the real AsyncOpenAI client against the fake OpenAI server: streamed
PCM resampled as it arrives, the request's options, cancellation and failures."""

from __future__ import annotations

from contextlib import aclosing
from typing import Any

import numpy as np
import pytest
import trio

from media.resample import Resampler
from providers.base import ProviderError
from providers.openai.client import OpenAISettings
from providers.openai.tts import SPEECH_RATE, OpenAITTS
from tests.fakes.openai_http import SPEECH, ErrorReply, FakeOpenAI, PcmStream
from tests.speech import tone

KEY = "sk-test-0123456789abcdef"


@pytest.fixture
async def fake(nursery: trio.Nursery) -> FakeOpenAI:
    fake = FakeOpenAI()
    await nursery.start(fake.serve)
    return fake


def tts(fake: FakeOpenAI, **options: Any) -> OpenAITTS:
    return OpenAITTS(OpenAISettings(api_key=KEY, base_url=fake.base_url, timeout=5.0, max_retries=0), **options)


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_speech_streams_at_the_requested_rate(fake: FakeOpenAI, rate: int) -> None:
    speech = PcmStream(tone(1000, SPEECH_RATE), chunks=8, pause=0.02)
    fake.script(SPEECH, speech)
    chunks, sent_at_first_audio = [], None
    async for pcm in tts(fake).synthesize("Hello, this is trivox.", rate):
        if sent_at_first_audio is None:
            sent_at_first_audio = fake.requests[0].chunks_sent
        chunks.append(pcm)
    assert sent_at_first_audio is not None and sent_at_first_audio < len(speech.pieces())
    assert all(len(chunk) % 2 == 0 for chunk in chunks)
    out = np.frombuffer(b"".join(chunks), dtype="<i2").astype(np.int32)
    assert abs(len(out) - rate) <= rate * 0.005  # one second, within 5 ms
    # The same as resampling the whole signal at once (soxr differs by a few LSB at
    # block borders); a sample split across HTTP chunks and misjoined would not be.
    resampler = Resampler(SPEECH_RATE, rate)
    reference = np.frombuffer(resampler.process(speech.pcm) + resampler.flush(), dtype="<i2").astype(np.int32)
    assert len(out) == len(reference) and np.abs(out - reference).max() <= 8


async def test_the_request_carries_model_voice_instructions_and_speed(fake: FakeOpenAI) -> None:
    fake.script(SPEECH, PcmStream(tone(200, SPEECH_RATE)), PcmStream(tone(200, SPEECH_RATE)))
    persona = "Warm and unhurried, like a concierge."
    configured_tts = tts(fake, model="tts-1-hd", voice="coral", instructions=persona, speed=1.25)
    [_ async for _ in configured_tts.synthesize("Hi.", 8000)]
    [_ async for _ in tts(fake).synthesize("Hello.", 8000)]
    configured, plain = (request.json for request in fake.to(SPEECH))
    assert configured == {"model": "tts-1-hd", "voice": "coral", "instructions": persona, "speed": 1.25,
                          "input": "Hi.", "response_format": "pcm"}
    assert plain == {"model": "gpt-4o-mini-tts", "voice": "alloy", "input": "Hello.", "response_format": "pcm"}


async def test_cancelling_mid_speech_closes_the_response(fake: FakeOpenAI) -> None:
    fake.script(SPEECH, PcmStream(tone(3000, SPEECH_RATE), chunks=30, pause=0.02))
    with trio.CancelScope() as scope:
        async with aclosing(tts(fake).synthesize("A long announcement.", 8000)) as audio:
            async for _ in audio:
                scope.cancel()  # barge-in while the first chunk plays
                await trio.sleep(1)
    await fake.requests[0].finished.wait()
    assert fake.requests[0].disconnected and not fake.requests[0].completed


async def test_empty_text_makes_no_request(fake: FakeOpenAI) -> None:
    assert [pcm async for pcm in tts(fake).synthesize("  \n", 8000)] == []
    assert fake.requests == []


async def test_a_response_broken_mid_speech_is_an_error(fake: FakeOpenAI) -> None:
    fake.script(SPEECH, PcmStream(tone(1000, SPEECH_RATE), chunks=6, pause=0.02, drop_after=3))
    with pytest.raises(ProviderError, match="speech model 'gpt-4o-mini-tts'.*the reply broke off"):
        [_ async for _ in tts(fake).synthesize("Hello.", 8000)]


async def test_a_refused_request_is_one_line_without_the_key(fake: FakeOpenAI) -> None:
    fake.script(SPEECH, ErrorReply(400, "Invalid voice for key {api_key}", type="invalid_request_error"))
    with pytest.raises(ProviderError, match="HTTP 400: Invalid voice") as error:
        [_ async for _ in tts(fake, voice="nobody").synthesize("Hello.", 8000)]
    assert KEY not in str(error.value) and "\n" not in str(error.value)


def test_out_of_range_speed_is_refused() -> None:
    with pytest.raises(ProviderError, match="speed"):
        OpenAITTS(OpenAISettings(), speed=5.0)


async def test_a_stall_mid_speech_times_out(fake: FakeOpenAI) -> None:
    fake.script(SPEECH, PcmStream(tone(1000, SPEECH_RATE), chunks=4, pause=30))
    settings = OpenAISettings(api_key=KEY, base_url=fake.base_url, timeout=0.2, max_retries=0)
    audio = []
    with pytest.raises(ProviderError, match="went silent mid-reply for 0.2 s"):
        async for pcm in OpenAITTS(settings).synthesize("Hello.", 8000):
            audio.append(pcm)
    assert audio  # the first chunk was spoken before the service stalled
    await fake.requests[0].finished.wait()
    assert fake.requests[0].disconnected
