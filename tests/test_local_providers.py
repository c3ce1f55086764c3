"""The offline providers: eSpeak NG speaks, pocketsphinx listens."""

from __future__ import annotations

import pytest
import trio

from providers.base import ProviderError
from providers.registry import build_asr, build_tts
from tests.phone import rms


async def synthesize(text: str, rate: int) -> list[bytes]:
    return [chunk async for chunk in build_tts("local", {}).synthesize(text, rate)]


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
async def test_espeak_speaks_at_the_requested_rate(rate):
    chunks = await synthesize("Good morning, how can I help you today?", rate)
    pcm = b"".join(chunks)
    seconds = len(pcm) / 2 / rate
    assert 1.5 < seconds < 5.0  # ten words at 175 words per minute
    assert rms(pcm) > 1000
    assert len(chunks) > 3  # streamed in pieces, not one block at the end


async def test_espeak_streams_before_the_text_is_done():
    text = " ".join(["This sentence is long enough to take a while."] * 30)
    got_first = False
    async for chunk in build_tts("local", {}).synthesize(text, 8000):
        got_first = len(chunk) > 0
        break  # cancelling the consumer must stop the synthesis and release the engine
    assert got_first
    with trio.fail_after(10):
        assert await synthesize("still works", 8000)


def test_unknown_voice_fails_at_construction():
    with pytest.raises(ProviderError, match="no voice 'xx-nonexistent'"):
        build_tts("local", {"voice": "xx-nonexistent"})


def test_unknown_provider_type():
    with pytest.raises(ProviderError, match="unknown ASR provider 'cloud9'"):
        build_asr("cloud9", {})


async def test_sphinx_recognises_espeak_speech_from_8khz_frames():
    pcm = bytes(3200) + b"".join(await synthesize("yes", 8000)) + bytes(3200)
    asr = build_asr("local", {})
    stream = await asr.open_stream(8000)
    for i in range(0, len(pcm), 320):
        await stream.send_audio(pcm[i:i + 320])
    result = await stream.finish()
    await stream.aclose()
    assert result.final
    assert result.text  # pocketsphinx on eSpeak is rough; that it hears words is the point


async def test_sphinx_stream_can_close_mid_utterance_and_decoders_are_reused():
    asr = build_asr("local", {})
    pcm = b"".join(await synthesize("one two three", 8000))
    decoders = set()
    for _ in range(3):
        stream = await asr.open_stream(8000)
        decoders.add(id(stream._decoder))
        await stream.send_audio(pcm[: len(pcm) // 4 * 2])
        await stream.aclose()
        await stream.aclose()  # twice is fine
    assert len(decoders) == 1  # closed streams give their decoder back to the pool
    silent = await asr.open_stream(8000)
    await silent.send_audio(bytes(16000))
    assert (await silent.finish()).text == ""
    await silent.aclose()
