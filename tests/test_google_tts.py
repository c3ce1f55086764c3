"""Google Text-to-Speech: the real google-cloud-texttospeech client against a fake gRPC
service on loopback (tests/fakes/google_grpc.py), SynthesizeSpeech and StreamingSynthesize."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import aclosing

import grpc
import pytest
import trio
from google.cloud.texttospeech_v1.types import cloud_tts

from media.audio import SAMPLE_WIDTH
from providers.base import ProviderError
from providers.google.tts import CHUNK_MS, GoogleTTS, parse_wav
from tests.fakes.google_grpc import MS_PER_CHAR, Failure, FakeGoogle, until, wait_for

TEXT = "Hello there. How can I help you today?"
SENTENCES = ["Hello there.", "How can I help you today?"]
CHIRP = "en-US-Chirp3-HD-Charon"


@pytest.fixture
def fake() -> Iterator[FakeGoogle]:
    with FakeGoogle() as server:
        yield server


async def spoken(tts: GoogleTTS, text: str, rate: int) -> list[bytes]:
    return [chunk async for chunk in tts.synthesize(text, rate)]


def expected_bytes(text: str, rate: int) -> int:
    return rate * MS_PER_CHAR * len(text) // 1000 * SAMPLE_WIDTH


# --- SynthesizeSpeech ------------------------------------------------------------------


async def test_the_request_carries_voice_language_rate_pitch_and_sample_rate(fake):
    tts = GoogleTTS(voice="en-GB-Wavenet-B", speaking_rate=1.25, pitch=-2.5, endpoint=fake.endpoint)
    await spoken(tts, "Good morning.", 16000)
    (call,) = fake.tts.calls
    request = call.config
    assert request.input.text == "Good morning."
    assert (request.voice.name, request.voice.language_code) == ("en-GB-Wavenet-B", "en-GB")  # from the name
    audio = request.audio_config
    assert audio.audio_encoding == cloud_tts.AudioEncoding.LINEAR16
    assert (audio.sample_rate_hertz, audio.speaking_rate, audio.pitch) == (16000, 1.25, -2.5)


async def test_a_language_set_apart_from_the_voice_is_sent(fake):
    await spoken(GoogleTTS(voice="en-US-Standard-C", language="es-US", endpoint=fake.endpoint), "Hola.", 8000)
    assert fake.tts.calls[0].config.voice.language_code == "es-US"


@pytest.mark.parametrize("rate", [8000, 24000])
async def test_linear16_comes_without_its_wav_header(fake, rate):
    chunks = await spoken(GoogleTTS(endpoint=fake.endpoint), TEXT, rate)
    audio = b"".join(chunks)
    assert audio == b"".join(fake.tts.tones)  # every sample, and not one header byte
    assert len(audio) == sum(expected_bytes(sentence, rate) for sentence in SENTENCES)
    assert max(map(len, chunks)) == rate * SAMPLE_WIDTH * CHUNK_MS // 1000


async def test_mulaw_is_expanded_to_s16le(fake):
    chunks = await spoken(GoogleTTS(encoding="MULAW", endpoint=fake.endpoint), TEXT, 8000)
    assert fake.tts.calls[0].config.audio_config.audio_encoding == cloud_tts.AudioEncoding.MULAW
    assert b"".join(chunks) == b"".join(fake.tts.tones)  # the fake's tones after its own mu-law round trip
    assert sum(map(len, chunks)) == 2 * sum(len(call.audio) for call in fake.tts.calls)  # a byte became a sample


async def test_each_sentence_is_its_own_request_in_order(fake):
    await spoken(GoogleTTS(endpoint=fake.endpoint), TEXT, 8000)
    assert [call.texts for call in fake.tts.calls] == [[sentence] for sentence in SENTENCES]


async def test_no_text_makes_no_request(fake):
    assert await spoken(GoogleTTS(endpoint=fake.endpoint), "  ", 8000) == []
    assert fake.tts.calls == []


async def test_cancelling_the_consumer_cancels_the_call_at_the_service(fake):
    fake.tts.hold = True
    tts = GoogleTTS(endpoint=fake.endpoint)
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(spoken, tts, TEXT, 8000)
            await until(lambda: fake.tts.calls)
            scope.cancel()
    call = fake.tts.calls[0]
    await wait_for(call.done)
    assert call.cancelled
    assert len(fake.tts.calls) == 1  # and the second sentence was never asked for


async def test_a_grpc_error_is_a_one_line_provider_error(fake):
    fake.tts.failure = Failure(grpc.StatusCode.INVALID_ARGUMENT, "Voice 'en-US-Nope' does not exist.\nPick one.")
    with pytest.raises(ProviderError) as raised:
        await spoken(GoogleTTS(voice="en-US-Nope-A", endpoint=fake.endpoint), TEXT, 8000)
    assert str(raised.value) == ("Google Text-to-Speech failed: INVALID_ARGUMENT: Voice 'en-US-Nope' does not "
                                 "exist. Pick one. (check the provider's options)")


# --- StreamingSynthesize ---------------------------------------------------------------


@pytest.mark.parametrize(("encoding", "wire"), [("LINEAR16", cloud_tts.AudioEncoding.PCM),
                                                ("MULAW", cloud_tts.AudioEncoding.MULAW)])
async def test_streaming_sends_one_config_then_the_sentences(fake, encoding, wire):
    tts = GoogleTTS(voice=CHIRP, speaking_rate=0.9, encoding=encoding, endpoint=fake.endpoint, streaming=True)
    audio = b"".join(await spoken(tts, TEXT, 16000))
    (call,) = fake.tts.calls
    assert (call.config.voice.name, call.config.voice.language_code) == (CHIRP, "en-US")
    config = call.config.streaming_audio_config
    assert (config.audio_encoding, config.sample_rate_hertz, config.speaking_rate) == (wire, 16000, 0.9)
    assert call.texts == SENTENCES
    assert audio == b"".join(fake.tts.tones)
    assert len(audio) == sum(expected_bytes(sentence, 16000) for sentence in SENTENCES)


async def test_streaming_audio_is_yielded_before_the_call_ends(fake):
    fake.tts.hold = True  # the service stops after its first response
    tts = GoogleTTS(voice=CHIRP, endpoint=fake.endpoint, streaming=True)
    async with aclosing(tts.synthesize(TEXT, 8000)) as chunks:
        first = await chunks.__anext__()
        assert first  # while the service still holds the call open
    call = fake.tts.calls[0]
    await wait_for(call.done)
    assert call.cancelled  # closing the generator cancelled the call
    assert first == fake.tts.tones[0][:len(first)]


async def test_a_streaming_grpc_error_is_a_provider_error(fake):
    fake.tts.failure = Failure(grpc.StatusCode.PERMISSION_DENIED, "Caller lacks permission")
    with pytest.raises(ProviderError, match="PERMISSION_DENIED: Caller lacks permission .*enabled"):
        await spoken(GoogleTTS(voice=CHIRP, endpoint=fake.endpoint, streaming=True), TEXT, 8000)


def test_streaming_needs_a_chirp3_hd_voice_and_no_pitch():
    with pytest.raises(ProviderError, match="Chirp3-HD voices only.*'en-US-Standard-C'"):
        GoogleTTS(streaming=True, endpoint="127.0.0.1:1")
    with pytest.raises(ProviderError, match="no pitch"):
        GoogleTTS(voice=CHIRP, pitch=2.0, streaming=True, endpoint="127.0.0.1:1")


# --- options, credentials, WAV ----------------------------------------------------------


@pytest.mark.parametrize(("options", "complaint"), [
    ({"speaking_rate": 3.0}, "speaking rate is 0.25..2.0, not 3.0"),
    ({"pitch": -21.0}, "pitch is -20.0..20.0 semitones"),
    ({"encoding": "MP3"}, "LINEAR16, MULAW"),
    ({"voice": "Kore"}, "cannot tell the language of voice 'Kore'"),
])
def test_bad_options_are_refused_at_start(options, complaint):
    with pytest.raises(ProviderError, match=complaint):
        GoogleTTS(endpoint="127.0.0.1:1", **options)


def test_a_missing_credentials_file_is_one_line_naming_it(tmp_path):
    path = tmp_path / "service-account.json"
    with pytest.raises(ProviderError) as raised:
        GoogleTTS(credentials=str(path))
    message = str(raised.value)
    assert message.startswith(f"Google Text-to-Speech: the credentials file {path} does not exist")
    assert "\n" not in message


def test_a_credentials_file_that_is_not_json_is_named(tmp_path):
    path = tmp_path / "key.json"
    path.write_text("not json")
    with pytest.raises(ProviderError, match=f"{path} is not a service-account key file"):
        GoogleTTS(credentials=str(path))


def chunk(tag: bytes, body: bytes) -> bytes:
    return tag + struct.pack("<I", len(body)) + body + b"\0" * (len(body) & 1)


def test_wav_chunks_are_walked_with_their_padding():
    fmt = struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16)
    body = b"WAVE" + chunk(b"fmt ", fmt) + chunk(b"LIST", b"odd") + chunk(b"data", b"\x01\x02\x03\x04")
    wav = parse_wav(b"RIFF" + struct.pack("<I", len(body)) + body)
    assert (wav.format_tag, wav.channels, wav.sample_rate, wav.payload) == (1, 1, 8000, b"\x01\x02\x03\x04")


@pytest.mark.parametrize(("data", "complaint"), [
    (b"ID3\x03 an mp3", "not a RIFF/WAVE file"),
    (b"RIFF\x10\0\0\0WAVE" + chunk(b"data", b"\0\0"), "data chunk before the fmt chunk"),
    (b"RIFF\x10\0\0\0WAVE" + chunk(b"fmt ", struct.pack("<HHIIHH", 1, 1, 8000, 16000, 2, 16)), "no data chunk"),
])
def test_broken_wav_is_refused(data, complaint):
    with pytest.raises(ValueError, match=complaint):
        parse_wav(data)
