"""OpenAIRealtimeTranscriber (streaming ASR) against the fake Realtime server on loopback."""

from __future__ import annotations

import pytest
import trio

from media.audio import frame_bytes
from media.codecs import PCMU
from providers.base import ProviderError, Transcript
from providers.openai.client import OpenAISettings
from providers.openai.realtime_transcribe import OpenAIRealtimeTranscriber, RealtimeTranscriptionStream
from tests.fakes.openai_realtime import FakeRealtime
from tests.speech import tone

KEY = "sk-test-secret-key"
MULAW = PCMU.transcoder()
HANG_GUARD = 10  # guards against a hang only; no test asserts a time


@pytest.fixture
async def fake(nursery: trio.Nursery) -> FakeRealtime:
    fake = FakeRealtime()
    fake.base_url = await nursery.start(fake.serve)
    return fake


def asr(fake: FakeRealtime, timeout: float = 5, **options) -> OpenAIRealtimeTranscriber:
    return OpenAIRealtimeTranscriber(OpenAISettings(api_key=KEY, base_url=fake.base_url, timeout=timeout),
                                     **options)


async def feed(stream: RealtimeTranscriptionStream, pcm: bytes, rate: int) -> None:
    step = frame_bytes(rate)
    for start in range(0, len(pcm), step):
        await stream.send_audio(pcm[start:start + step])


async def test_interim_texts_then_the_final_one_for_an_8khz_utterance(fake: FakeRealtime) -> None:
    fake.transcript = "Book a table for two."
    fake.interim = ["book", " a table", " for two"]
    utterance = tone(1500, 8000, hz=300, amplitude=6000)
    stream = await asr(fake, language="en").open_stream(8000)
    await feed(stream, utterance, 8000)
    with trio.fail_after(HANG_GUARD):
        result = await stream.finish()
    assert result == Transcript("Book a table for two.", final=True)
    assert stream.partial == "book a table for two"  # the last interim text
    conn = fake.last
    assert conn.query == {"intent": "transcription"}
    assert conn.headers["authorization"] == f"Bearer {KEY}"
    assert conn.session == {"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcmu"}, "turn_detection": None,
        "transcription": {"model": "gpt-4o-mini-transcribe", "language": "en"}}}}
    assert bytes(conn.audio) == MULAW.encode(utterance)  # every byte, as mu-law
    types = conn.types()
    assert types[0] == "session.update" and types[-1] == "input_audio_buffer.commit"
    assert set(types[1:-1]) == {"input_audio_buffer.append"}
    with pytest.raises(trio.ClosedResourceError):
        await stream.send_audio(utterance[:320])
    await stream.aclose()


async def test_a_16khz_utterance_goes_as_pcm16_at_24khz(fake: FakeRealtime) -> None:
    fake.transcript = "hello"
    stream = await asr(fake, model="gpt-4o-transcribe").open_stream(16000)
    await feed(stream, tone(800, 16000, hz=300, amplitude=6000), 16000)
    with trio.fail_after(HANG_GUARD):
        assert await stream.finish() == Transcript("hello", final=True)
    conn = fake.last
    assert conn.session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert conn.session["audio"]["input"]["transcription"] == {"model": "gpt-4o-transcribe"}
    assert abs(len(conn.audio) // 2 - 24000 * 800 // 1000) <= 2  # 800 ms at 24 kHz, tail flushed


async def test_no_audio_needs_no_connection_and_too_little_is_an_empty_transcript(fake: FakeRealtime) -> None:
    silent = await asr(fake).open_stream(8000)
    assert await silent.finish() == Transcript("", final=True)
    assert fake.connections == []
    short = await asr(fake).open_stream(8000)
    await feed(short, tone(40, 8000, hz=300, amplitude=6000), 8000)  # under the 100 ms the service commits
    with trio.fail_after(HANG_GUARD):
        assert await short.finish() == Transcript("", final=True)
    assert len(fake.last.audio) == 8 * 40


async def test_cancelling_finish_closes_the_socket(fake: FakeRealtime) -> None:
    fake.stall = trio.Event()
    stream = await asr(fake).open_stream(8000)
    await feed(stream, tone(500, 8000, hz=300, amplitude=6000), 8000)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream.finish)
        with trio.fail_after(HANG_GUARD):
            await fake.stall.wait()  # the fake holds the commit, unanswered
        nursery.cancel_scope.cancel()
    with trio.fail_after(HANG_GUARD):
        await fake.last.closed.wait()
    await stream.aclose()


async def test_a_service_that_never_answers_is_a_provider_error(fake: FakeRealtime) -> None:
    fake.stall = trio.Event()
    stream = await asr(fake, timeout=0.2).open_stream(8000)
    await feed(stream, tone(300, 8000, hz=300, amplitude=6000), 8000)
    with pytest.raises(ProviderError, match="no transcript within"):
        await stream.finish()
    with trio.fail_after(HANG_GUARD):
        await fake.last.closed.wait()
