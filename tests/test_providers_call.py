"""Every cloud ASR and TTS provider through the Call API, built by the registry from the
options a config gives (as `trivox serve` builds them), each against its fake service:
the caller's utterance, cut by our VAD, is transcribed for listen(); say() puts the
provider's speech on the line at the call's rate."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import pytest
import trio

from dialog.call import Call, CallServices
from media.pacer import Pacer
from providers.registry import build
from tests.fakes.avr import FakeAvrHttp
from tests.fakes.google_grpc import FakeGoogle
from tests.fakes.openai_http import SPEECH, SPEECH_RATE, TRANSCRIPTIONS, FakeOpenAI, JsonReply, PcmStream
from tests.fakes.openai_realtime import FakeRealtime
from tests.phone import SPEECH_RMS, rms
from tests.speech import speak, tone
from tests.test_call import RATE, MemoryLeg

KEY = "sk-test-providers"


@pytest.fixture
def google() -> Iterator[FakeGoogle]:
    with FakeGoogle() as server:
        yield server


@asynccontextmanager
async def served(fake) -> AsyncIterator[str]:
    """A fake on loopback for the test's length; its address."""
    async with trio.open_nursery() as nursery:
        address = await nursery.start(fake.serve)
        yield address
        nursery.cancel_scope.cancel()


async def hear(asr, utterance: bytes) -> str | None:
    """The caller says ``utterance`` on a call whose recogniser is ``asr``: what listen() gets."""
    leg = MemoryLeg()
    async with trio.open_nursery() as nursery:
        call = Call(leg, CallServices(asr=asr, tts=build("tts", "local", {})), nursery)
        nursery.start_soon(call.run_ears)
        nursery.start_soon(leg.talk, bytes(RATE) + utterance)
        text = await call.listen(timeout=20)
        nursery.cancel_scope.cancel()
    return text


UTTERANCE = speak("I would like to know when my order will arrive", RATE)


async def test_openai_transcribes_the_utterance_the_vad_cut():
    fake = FakeOpenAI()
    async with served(fake) as base_url:
        fake.script(TRANSCRIPTIONS, JsonReply({"text": "When will my order arrive?"}))
        asr = build("asr", "openai", {"language": "en"}, {"openai": {"api_key": KEY, "base_url": base_url}})
        assert await hear(asr, UTTERANCE) == "When will my order arrive?"
    (request,) = fake.to(TRANSCRIPTIONS)
    assert request.fields["language"] == "en"
    wav = request.files["file"].data
    # The WAV holds the utterance the VAD cut: its speech, a little padding, at the call's rate.
    seconds = (len(wav) - 44) / 2 / RATE
    assert len(UTTERANCE) / 2 / RATE - 0.1 < seconds < len(UTTERANCE) / 2 / RATE + 1.0


async def test_openai_realtime_transcription_gets_the_utterance_as_mu_law():
    fake = FakeRealtime()
    fake.transcript = "when will my order arrive"
    async with served(fake) as base_url:
        asr = build("asr", "openai-realtime", {}, {"openai": {"api_key": KEY, "base_url": base_url}})
        assert await hear(asr, UTTERANCE) == "when will my order arrive"
    conn = fake.last
    assert conn.transcription and conn.pcmu
    assert len(UTTERANCE) // 2 - RATE // 10 < len(conn.audio) < len(UTTERANCE) // 2 + RATE


async def test_google_streams_the_utterance_and_every_byte_arrives(google):
    asr = build("asr", "google", {"language": "en-GB"}, {"google": {"endpoint": google.endpoint}})
    text = await hear(asr, UTTERANCE)
    (call,) = google.speech.calls
    assert call.config.config.language_code == "en-GB" and call.config.config.sample_rate_hertz == RATE
    assert call.config.interim_results
    # The fake's final transcript counts the audio it received: all that was sent.
    assert text == f"{len(call.audio)} bytes"
    assert len(UTTERANCE) - RATE // 5 < len(call.audio) < len(UTTERANCE) + 2 * RATE


async def test_avr_asr_gets_8_khz_audio_and_its_segments_are_joined():
    fake = FakeAvrHttp()
    fake.transcripts = ["when will", "my order arrive"]
    async with served(fake):
        asr = build("asr", "avr", {"url": fake.url})
        assert await hear(asr, UTTERANCE) == "when will my order arrive"
    (exchange,) = fake.exchanges
    assert exchange.headers["content-type"] == "audio/l16"
    assert len(exchange.body) > len(UTTERANCE) - RATE // 5


async def say(tts, text: str, rate: int = RATE) -> tuple[bool, list[bytes]]:
    """say(text) on a call at ``rate`` whose TTS is ``tts``: its result, and the frames sent."""
    leg = MemoryLeg()
    leg.sample_rate, leg.pacer = rate, Pacer(rate)
    async with trio.open_nursery() as nursery:
        await nursery.start(leg.pacer.run, leg.sink)
        call = Call(leg, CallServices(asr=None, tts=tts), nursery)
        finished = await call.say(text)
        nursery.cancel_scope.cancel()
    return finished, [frame for frame in leg.sent if frame is not None]


def speech_ms(frames: list[bytes]) -> int:
    return 20 * sum(rms(frame) > SPEECH_RMS for frame in frames)


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_openai_speech_reaches_the_line_at_the_call_rate(rate):
    fake = FakeOpenAI()
    async with served(fake) as base_url:
        fake.script(SPEECH, PcmStream(tone(1200, SPEECH_RATE, hz=300)))
        tts = build("tts", "openai", {"voice": "verse", "instructions": "warm and calm"},
                    {"openai": {"api_key": KEY, "base_url": base_url}})
        finished, frames = await say(tts, "Your order arrives tomorrow.", rate)
    assert finished
    assert all(len(frame) == rate // 50 * 2 for frame in frames)  # 20 ms frames at the call's rate
    assert abs(speech_ms(frames) - 1200) <= 60
    (request,) = fake.to(SPEECH)
    assert (request.json["voice"], request.json["instructions"]) == ("verse", "warm and calm")


async def test_google_speech_reaches_the_line_at_the_call_rate(google):
    tts = build("tts", "google", {"voice": "en-US-Neural2-F", "speed": 1.1}, {"google": {"endpoint": google.endpoint}})
    text = "Your order arrives tomorrow."
    finished, frames = await say(tts, text)
    assert finished
    (call,) = google.tts.calls
    request = call.config  # the SynthesizeSpeechRequest as received
    assert request.audio_config.sample_rate_hertz == RATE  # synthesised at the call's rate
    assert request.voice.name == "en-US-Neural2-F"
    assert request.audio_config.speaking_rate == pytest.approx(1.1)
    assert abs(speech_ms(frames) - 20 * len(text)) <= 60  # the fake's tone: 20 ms a character


async def test_avr_speech_reaches_the_line():
    fake = FakeAvrHttp()
    fake.audio = tone(900, 8000, hz=300)
    async with served(fake):
        finished, frames = await say(build("tts", "avr", {"url": fake.url}), "Your order arrives tomorrow.")
    assert finished
    assert abs(speech_ms(frames) - 900) <= 60
    assert re.fullmatch(r"/text-to-speech-stream", fake.exchanges[0].path)


async def interrupted_say(tts, text: str) -> tuple[bool, list[dict]]:
    """say(text) while the caller starts talking a second in: its result and the history."""
    leg = MemoryLeg()
    async with trio.open_nursery() as nursery:
        await nursery.start(leg.pacer.run, leg.sink)
        call = Call(leg, CallServices(asr=None, tts=tts), nursery)
        nursery.start_soon(call.run_ears)

        async def caller() -> None:
            await trio.sleep(1.0)
            await leg.talk(speak("no, wait, stop", RATE))

        nursery.start_soon(caller)
        finished = await call.say(text)
        nursery.cancel_scope.cancel()
    return finished, call.history


async def test_barge_in_closes_openais_speech_stream_mid_sentence():
    fake = FakeOpenAI()
    async with served(fake) as base_url:
        # Eight seconds of speech sent over four: still streaming when the caller talks.
        fake.script(SPEECH, PcmStream(tone(8000, SPEECH_RATE, hz=300), chunks=40, pause=0.1))
        tts = build("tts", "openai", {}, {"openai": {"api_key": KEY, "base_url": base_url}})
        finished, history = await interrupted_say(tts, "A very long sentence about every bread we bake today")
        (request,) = fake.to(SPEECH)
        with trio.fail_after(5):
            await request.finished.wait()
    assert finished is False and request.disconnected
    (said,) = history
    assert "A very long sentence about every bread we bake today".startswith(said["content"])


async def test_barge_in_closes_an_avr_speech_stream():
    fake = FakeAvrHttp()
    fake.audio = tone(600, 8000, hz=300)
    fake.hold = True  # the service keeps the answer open: more audio might come
    async with served(fake):
        finished, _ = await interrupted_say(build("tts", "avr", {"url": fake.url}), "Hold the line please.")
        (exchange,) = fake.exchanges
        with trio.fail_after(5):
            await exchange.ended.wait()
    assert finished is False and exchange.disconnected
