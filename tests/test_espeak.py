"""eSpeak NG text-to-speech: audio, streaming per sentence, cancellation, the shared engine."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import trio

from media.audio import frame_bytes
from providers.base import ProviderError
from providers.local import espeak
from providers.local.espeak import MAX_SEGMENT_CHARS, EspeakTTS, segments
from providers.registry import build_tts
from tests.phone import SPEECH_RMS, rms

LONG_TEXT = " ".join(f"This is sentence number {n}, long enough to be heard." for n in range(1, 21))


async def collect(tts: EspeakTTS, text: str, rate: int) -> list[bytes]:
    return [chunk async for chunk in tts.synthesize(text, rate)]


@pytest.fixture
def synth_calls(monkeypatch) -> list[str]:
    """The text of every engine synthesis, in order, as the worker threads start them."""
    calls: list[str] = []
    real = espeak._Engine.synth

    def counting(self, text, voice, cancel, *, pause_after):  # type: ignore[no-untyped-def]
        calls.append(text)
        return real(self, text, voice, cancel, pause_after=pause_after)

    monkeypatch.setattr(espeak._Engine, "synth", counting)
    return calls


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
async def test_speech_at_the_requested_rate(rate):
    chunks = await collect(EspeakTTS(), "Good morning, how can I help you today?", rate)
    pcm = b"".join(chunks)
    assert 1.5 < len(pcm) / 2 / rate < 4.0  # eight words at 175 words per minute
    frame = frame_bytes(rate)
    loud = [rms(pcm[i:i + frame]) > SPEECH_RMS for i in range(0, len(pcm), frame)]
    assert sum(loud) > len(loud) // 2
    spectrum = np.abs(np.fft.rfft(np.frombuffer(pcm, dtype="<i2").astype(np.float64)))
    hz = np.fft.rfftfreq(len(pcm) // 2, 1 / rate)
    voice_band = spectrum[(hz > 100) & (hz < 3400)].sum()
    assert voice_band > 0.8 * spectrum.sum()  # speech, not clicks or hiss


def seconds(pcm: bytes, rate: int) -> float:
    return len(pcm) / 2 / rate


async def test_chunks_add_up_to_what_render_makes_at_once():
    # Not byte for byte: eSpeak carries a little state from one synthesis to the next,
    # and the same text comes out a few samples longer or shorter each time.
    tts = EspeakTTS()
    text = "Hello there. How are you? Fine, thanks."
    streamed = b"".join(await collect(tts, text, 8000))
    assert seconds(streamed, 8000) == pytest.approx(seconds(tts.render(text, 8000), 8000), abs=0.01)


async def test_first_audio_comes_before_the_rest_is_synthesised(synth_calls):
    pieces = segments(LONG_TEXT)
    assert len(pieces) == 20
    generator = EspeakTTS().synthesize(LONG_TEXT, 8000)
    first = await generator.__anext__()
    assert first
    assert synth_calls == pieces[:1]  # one sentence made, nineteen to go
    rest = [chunk async for chunk in generator]
    assert synth_calls == pieces
    assert len(rest) > 100


async def test_cancelling_the_consumer_stops_the_synthesis(synth_calls):
    tts = EspeakTTS()
    with trio.CancelScope() as scope:
        async for _chunk in tts.synthesize(LONG_TEXT, 8000):
            scope.cancel()
            await trio.lowlevel.checkpoint()
    assert scope.cancelled_caught
    assert len(synth_calls) == 1
    assert espeak.engine().lock.acquire(blocking=False)  # nothing holds the engine
    espeak.engine().lock.release()
    with trio.fail_after(10):
        assert await collect(tts, "Still here.", 8000)


async def test_cancel_while_a_sentence_is_in_the_thread(monkeypatch):
    entered, go, done = threading.Event(), threading.Event(), threading.Event()
    outcome: list[int] = []
    real = espeak._Engine.synth

    def stalled(self, text, voice, cancel, *, pause_after):  # type: ignore[no-untyped-def]
        entered.set()
        go.wait()
        blocks = real(self, text, voice, cancel, pause_after=pause_after)
        outcome.append(len(blocks))
        done.set()
        return blocks

    monkeypatch.setattr(espeak._Engine, "synth", stalled)
    tts = EspeakTTS()
    with trio.move_on_after(30) as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(collect, tts, LONG_TEXT, 8000)
            await trio.to_thread.run_sync(entered.wait)
            nursery.cancel_scope.cancel()  # the worker is still stuck: it is abandoned
    assert not scope.cancelled_caught
    go.set()  # the abandoned thread finds its flag set and makes nothing
    assert await trio.to_thread.run_sync(done.wait, 30)
    assert outcome == [0]


def test_the_callback_aborts_mid_sentence_and_the_engine_recovers():
    class SetAfter(threading.Event):
        """A cancel flag that turns on after ``n`` looks: mid-synthesis, deterministically."""

        def __init__(self, n: int) -> None:
            super().__init__()
            self.looks = n

        def is_set(self) -> bool:
            self.looks -= 1
            return self.looks < 0

    engine = espeak.engine()
    voice = espeak._Voice("en-us", 175, 50)
    text = "This sentence takes a few seconds to say, so it comes in many blocks."
    full = engine.synth(text, voice, threading.Event(), pause_after=False)
    aborted = engine.synth(text, voice, SetAfter(4), pause_after=False)
    assert 0 < len(aborted) < len(full) // 2
    again = engine.synth(text, voice, threading.Event(), pause_after=False)
    assert len(b"".join(again)) == pytest.approx(len(b"".join(full)), rel=0.01)


async def test_voices_interleave_without_mixing_settings():
    fast, slow = EspeakTTS(rate=300), EspeakTTS(voice="en", rate=120, pitch=10)
    text = "One sentence. Another sentence. A third one."
    together: dict[str, list[bytes]] = {"fast": [], "slow": []}

    async def speak(name: str, tts: EspeakTTS) -> None:
        async for chunk in tts.synthesize(text, 8000):
            together[name].append(chunk)
            await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(speak, "fast", fast)
        nursery.start_soon(speak, "slow", slow)
    for name, tts in (("fast", fast), ("slow", slow)):
        alone = seconds(tts.render(text, 8000), 8000)
        assert seconds(b"".join(together[name]), 8000) == pytest.approx(alone, rel=0.02)
    assert seconds(fast.render(text, 8000), 8000) < 0.6 * seconds(slow.render(text, 8000), 8000)


def test_segments_are_sentences_and_long_ones_are_cut():
    assert segments("Hello there. How are you?\nFine!  ") == ["Hello there.", "How are you?", "Fine!"]
    assert segments("It costs 3.50 dollars.") == ["It costs 3.50 dollars."]
    assert segments("  ") == []
    run_on = "word, " * 40 + "and " * 80
    pieces = segments(run_on)
    assert all(len(piece) <= MAX_SEGMENT_CHARS for piece in pieces)
    assert pieces[0].endswith(",")  # cut at the last comma, where a pause belongs
    assert " ".join(pieces).split() == run_on.split()


def test_bad_settings_fail_at_construction():
    with pytest.raises(ProviderError, match="no voice 'xx-nonexistent'"):
        EspeakTTS(voice="xx-nonexistent")
    with pytest.raises(ProviderError, match="80..450 words per minute"):
        EspeakTTS(rate=1000)
    with pytest.raises(ProviderError, match="pitch"):
        EspeakTTS(pitch=-1)


def test_registry_builds_and_checks_the_local_tts():
    assert build_tts("local", {"voice": "en-gb-x-rp", "rate": 160, "pitch": 40}).name == "espeak"
    with pytest.raises(ProviderError, match="unknown TTS provider 'polly': use one of avr, google, local, openai,"):
        build_tts("polly", {})
    with pytest.raises(ProviderError, match="no option 'speed' .*voice, rate, pitch"):
        build_tts("local", {"speed": 1.2})
    with pytest.raises(ProviderError, match="'rate' must be int"):
        build_tts("local", {"rate": "fast"})
    with pytest.raises(ProviderError, match="'rate' must be int"):
        build_tts("local", {"rate": True})
