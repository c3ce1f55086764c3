"""OpenAITranscriber with the real AsyncOpenAI client against the fake OpenAI server: the
utterance goes out as a WAV file in a multipart form, and its text comes back final."""

from __future__ import annotations

import io
import wave
from typing import Any

import pytest
import trio

from media.audio import frame_bytes
from providers.base import ProviderError, Transcript
from providers.openai.client import OpenAISettings
from providers.openai.transcribe import OpenAITranscriber
from tests.fakes.openai_http import TRANSCRIPTIONS, ErrorReply, FakeOpenAI, JsonReply
from tests.speech import tone

KEY = "sk-test-0123456789abcdef"


@pytest.fixture
async def fake(nursery: trio.Nursery) -> FakeOpenAI:
    fake = FakeOpenAI()
    await nursery.start(fake.serve)
    return fake


def transcriber(fake: FakeOpenAI, **options: Any) -> OpenAITranscriber:
    settings = OpenAISettings(api_key=KEY, base_url=fake.base_url + "/", timeout=5.0, max_retries=0)
    return OpenAITranscriber(settings, **options)


async def utterance(asr: OpenAITranscriber, rate: int, pcm: bytes) -> Transcript:
    stream = await asr.open_stream(rate)
    try:
        for start in range(0, len(pcm), frame_bytes(rate)):
            await stream.send_audio(pcm[start:start + frame_bytes(rate)])
        return await stream.finish()
    finally:
        await stream.aclose()


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_the_utterance_is_sent_as_a_wav_at_the_streams_rate(fake: FakeOpenAI, rate: int) -> None:
    fake.script(TRANSCRIPTIONS, JsonReply({"text": " I'd like to book a table. "}))
    pcm = tone(1500, rate, hz=300, amplitude=6000)
    result = await utterance(transcriber(fake), rate, pcm)
    assert result == Transcript("I'd like to book a table.", final=True)
    [request] = fake.to(TRANSCRIPTIONS)
    upload = request.files["file"]
    assert upload.filename.endswith(".wav") and upload.content_type == "audio/wav"
    with wave.open(io.BytesIO(upload.data)) as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (rate, 1, 2)
        assert wav.getnframes() == int(rate * 1.5)
        assert wav.readframes(wav.getnframes()) == pcm
    assert request.fields == {"model": "gpt-4o-mini-transcribe"}


async def test_language_and_prompt_are_sent_when_set(fake: FakeOpenAI) -> None:
    fake.script(TRANSCRIPTIONS, JsonReply({"text": "Bonjour"}))
    asr = transcriber(fake, model="whisper-1", language="fr", prompt="Réservations, Chez Trivox.")
    assert await utterance(asr, 8000, tone(500, 8000, hz=300, amplitude=6000)) == Transcript("Bonjour", final=True)
    assert fake.requests[0].fields == {"model": "whisper-1", "language": "fr", "prompt": "Réservations, Chez Trivox."}


async def test_no_audio_or_a_click_is_an_empty_transcript_without_a_request(fake: FakeOpenAI) -> None:
    asr = transcriber(fake)
    assert await utterance(asr, 8000, b"") == Transcript("", final=True)
    assert await utterance(asr, 8000, tone(60, 8000, hz=300, amplitude=6000)) == Transcript("", final=True)
    assert fake.requests == []


async def test_a_finished_stream_takes_no_more_audio_and_closes_twice(fake: FakeOpenAI) -> None:
    stream = await transcriber(fake).open_stream(8000)
    await stream.send_audio(bytes(320))
    await stream.aclose()
    await stream.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await stream.send_audio(bytes(320))
    with pytest.raises(trio.ClosedResourceError):
        await stream.finish()
    assert fake.requests == []


async def test_a_refused_request_is_one_line_without_the_key(fake: FakeOpenAI) -> None:
    fake.script(TRANSCRIPTIONS, ErrorReply(400, "Audio unreadable (key {api_key})", type="invalid_request_error"))
    with pytest.raises(ProviderError, match="transcription model 'gpt-4o-mini-transcribe'.*HTTP 400") as error:
        await utterance(transcriber(fake), 8000, tone(500, 8000, hz=300, amplitude=6000))
    assert KEY not in str(error.value)
