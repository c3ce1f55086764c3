"""Google Speech-to-Text streaming: the real google-cloud-speech client against a fake
gRPC service on loopback (tests/fakes/google_grpc.py), and the sans-IO bookkeeping of an
utterance carried over several streams."""

from __future__ import annotations

import sys
import warnings
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
import trio
from google.cloud.speech_v1.types import cloud_speech
from google.rpc import status_pb2

from media.audio import frame_bytes
from providers.base import ProviderError
from providers.google.speech import FORCE_CUT_AT, MAX_REQUEST_AUDIO, SEEK_CUT_AT, GoogleSpeech, Recognition
from tests.fakes.google_grpc import Failure, FakeGoogle, until, wait_for

if sys.version_info >= (3, 13):
    import audioop
else:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop


@pytest.fixture
def fake() -> Iterator[FakeGoogle]:
    with FakeGoogle() as server:
        yield server


def speech(rate: int, ms: int, seed: int = 1) -> bytes:
    """Noise that no two offsets of share, so a lost, repeated or reordered byte shows."""
    samples = np.random.default_rng(seed).integers(-20000, 20000, rate * ms // 1000, dtype=np.int16)
    return samples.astype("<i2").tobytes()


def frames(pcm: bytes, rate: int) -> list[bytes]:
    size = frame_bytes(rate)
    return [pcm[i:i + size] for i in range(0, len(pcm), size)]


async def recognise(asr: GoogleSpeech, pcm: bytes, rate: int) -> str:
    stream = await asr.open_stream(rate)
    try:
        for frame in frames(pcm, rate):
            await stream.send_audio(frame)
        transcript = await stream.finish()
    finally:
        await stream.aclose()
    assert transcript.final
    return transcript.text


# --- against the fake service ----------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_the_streaming_config_reaches_the_service(fake, rate):
    asr = GoogleSpeech(language="de-DE", model="latest_short", use_enhanced=False, endpoint=fake.endpoint)
    await recognise(asr, speech(rate, 100), rate)
    (call,) = fake.speech.calls
    assert call.config.interim_results
    config = call.config.config
    assert config.encoding == cloud_speech.RecognitionConfig.AudioEncoding.LINEAR16
    assert config.sample_rate_hertz == rate
    assert (config.language_code, config.model, config.use_enhanced) == ("de-DE", "latest_short", False)


async def test_the_defaults_are_the_enhanced_phone_model_in_us_english(fake):
    await recognise(GoogleSpeech(endpoint=fake.endpoint), speech(8000, 40), 8000)
    config = fake.speech.calls[0].config.config
    assert (config.language_code, config.model, config.use_enhanced) == ("en-US", "phone_call", True)


async def test_audio_arrives_byte_exact_in_requests_under_the_size_limit(fake):
    asr = GoogleSpeech(endpoint=fake.endpoint)
    pcm = speech(16000, 3000)
    stream = await asr.open_stream(16000)
    await stream.send_audio(pcm[:64000])  # two seconds at once, as a pre-roll might come
    for frame in frames(pcm[64000:], 16000):
        await stream.send_audio(frame)
    transcript = await stream.finish()
    await stream.aclose()
    (call,) = fake.speech.calls
    assert bytes(call.audio) == pcm
    assert max(call.sizes) <= MAX_REQUEST_AUDIO
    assert transcript.text == f"{len(pcm)} bytes"
    await wait_for(call.done)
    assert not call.cancelled


async def test_mulaw_sends_g711_at_8_khz(fake):
    asr = GoogleSpeech(encoding="MULAW", endpoint=fake.endpoint)
    pcm = speech(8000, 500)
    assert await recognise(asr, pcm, 8000) == f"{len(pcm) // 2} bytes"
    call = fake.speech.calls[0]
    assert call.config.config.encoding == cloud_speech.RecognitionConfig.AudioEncoding.MULAW
    assert call.config.config.sample_rate_hertz == 8000
    assert bytes(call.audio) == audioop.lin2ulaw(pcm, 2)


async def test_mulaw_from_a_wideband_call_is_resampled_to_8_khz(fake):
    asr = GoogleSpeech(encoding="MULAW", endpoint=fake.endpoint)
    pcm = speech(16000, 1000)
    await recognise(asr, pcm, 16000)
    call = fake.speech.calls[0]
    assert call.config.config.sample_rate_hertz == 8000
    assert len(call.audio) == len(pcm) // 4  # half the samples, one byte each


async def test_interim_results_show_in_partial_then_the_final_one_is_returned(fake):
    stream = await GoogleSpeech(endpoint=fake.endpoint).open_stream(8000)
    assert stream.partial == ""
    await stream.send_audio(speech(8000, 20))
    await until(lambda: stream.partial == "320 bytes so far")
    await stream.send_audio(speech(8000, 20, seed=2))
    await until(lambda: stream.partial == "640 bytes so far")
    transcript = await stream.finish()
    assert transcript.text == "640 bytes"
    assert stream.partial == ""  # the final result replaced the guess
    await stream.aclose()


async def test_a_stream_near_its_time_limit_is_replaced_without_losing_or_repeating_audio(fake, mock_clock):
    limit = 2.0
    stream = await GoogleSpeech(endpoint=fake.endpoint, stream_limit=limit).open_stream(8000)
    pcm = speech(8000, 1200)
    parts = frames(pcm, 8000)
    for index, frame in enumerate(parts):
        if index in (20, 45):  # 0.4 s and 0.9 s into the audio, each a whole stream's age later
            mock_clock.jump(FORCE_CUT_AT * limit)
        await stream.send_audio(frame)
    transcript = await stream.finish()
    await stream.aclose()

    # The service may take the calls in any order; the audio says where each one began.
    calls = sorted(fake.speech.calls, key=lambda call: pcm.find(call.audio))
    assert len(calls) == 3
    assert b"".join(bytes(call.audio) for call in calls) == pcm
    assert [len(call.audio) for call in calls] == [20 * 320, 25 * 320, 15 * 320]
    for call in calls:
        await wait_for(call.done)
        assert not call.cancelled  # closed and answered, not dropped
    assert all(call.config == calls[0].config for call in calls)
    assert transcript.final and transcript.text == "6400 bytes 8000 bytes 4800 bytes"  # in spoken order


async def test_a_stream_younger_than_the_cut_point_is_kept(fake, mock_clock):
    stream = await GoogleSpeech(endpoint=fake.endpoint, stream_limit=2.0).open_stream(8000)
    await stream.send_audio(speech(8000, 20))
    mock_clock.jump(FORCE_CUT_AT * 2.0 - 0.01)
    await stream.send_audio(speech(8000, 20))
    await stream.finish()
    await stream.aclose()
    assert len(fake.speech.calls) == 1


async def test_a_stream_the_service_ends_early_is_replaced(fake):
    fake.speech.end_after_bytes = 320
    stream = await GoogleSpeech(endpoint=fake.endpoint).open_stream(8000)
    pcm = speech(8000, 20)
    await stream.send_audio(pcm)
    with trio.fail_after(10):
        while len(fake.speech.calls) < 2:  # until the client has seen the end and opened another
            await stream.send_audio(speech(8000, 20, seed=len(pcm)))
            await trio.sleep(0.005)
    transcript = await stream.finish()
    await stream.aclose()
    first, second = fake.speech.calls
    assert bytes(first.audio) == pcm
    assert second.config == first.config
    assert transcript.text == f"320 bytes {len(second.audio)} bytes"


async def test_cancelling_finish_cancels_the_call_at_the_service(fake):
    fake.speech.hold = True  # the service never answers the half-close
    stream = await GoogleSpeech(endpoint=fake.endpoint).open_stream(8000)
    await stream.send_audio(speech(8000, 100))
    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def finish() -> None:
            with scope:
                await stream.finish()

        nursery.start_soon(finish)
        await until(lambda: fake.speech.calls)
        await wait_for(fake.speech.calls[0].requests_ended)
        scope.cancel()
    assert scope.cancelled_caught
    call = fake.speech.calls[0]
    await wait_for(call.done)
    assert call.cancelled
    await stream.aclose()


async def test_closing_mid_utterance_cancels_the_call_at_the_service(fake):
    stream = await GoogleSpeech(endpoint=fake.endpoint).open_stream(8000)
    await stream.send_audio(speech(8000, 20))
    await until(lambda: stream.partial)  # the service has the call and the audio
    await stream.aclose()
    call = fake.speech.calls[0]
    await wait_for(call.done)
    assert call.cancelled
    await stream.aclose()  # again: a no-op
    with pytest.raises(trio.ClosedResourceError):
        await stream.send_audio(speech(8000, 20))


async def test_a_grpc_error_is_a_one_line_provider_error(fake):
    fake.speech.failure = Failure(grpc.StatusCode.PERMISSION_DENIED,
                                  "The caller does not have permission\nfor project 42", after_bytes=640)
    with pytest.raises(ProviderError) as raised:
        await recognise(GoogleSpeech(endpoint=fake.endpoint), speech(8000, 2000), 8000)
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("Google Speech-to-Text failed: PERMISSION_DENIED: The caller does not have "
                              "permission for project 42")
    assert "enabled" in message  # what to check


async def test_an_unreachable_service_is_a_provider_error():
    with trio.socket.socket() as sock:  # a port nobody listens on
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ProviderError, match="UNAVAILABLE.*check the network and the endpoint"):
        await recognise(GoogleSpeech(endpoint=f"127.0.0.1:{port}"), speech(8000, 100), 8000)


async def test_finish_twice_is_refused(fake):
    stream = await GoogleSpeech(endpoint=fake.endpoint).open_stream(8000)
    await stream.finish()
    with pytest.raises(trio.ClosedResourceError):
        await stream.finish()
    await stream.aclose()


def test_a_missing_credentials_file_is_named(tmp_path):
    path = tmp_path / "key.json"
    with pytest.raises(ProviderError) as raised:
        GoogleSpeech(credentials=str(path))
    assert str(path) in str(raised.value) and "\n" not in str(raised.value)


def test_a_file_that_is_no_credentials_is_named(tmp_path):
    path = tmp_path / "key.json"
    path.write_text('{"type": "service_account"}')
    with pytest.raises(ProviderError, match=f"{path} is not a service-account key file: .*client_email"):
        GoogleSpeech(credentials=str(path))


def test_an_unknown_encoding_is_refused():
    with pytest.raises(ProviderError, match="LINEAR16, MULAW"):
        GoogleSpeech(encoding="FLAC", endpoint="127.0.0.1:1")


# --- sans-IO: transcripts over segments, and where to cut ------------------------------


def response(*results: tuple[str, bool]) -> cloud_speech.StreamingRecognizeResponse:
    return cloud_speech.StreamingRecognizeResponse(results=[
        cloud_speech.StreamingRecognitionResult(
            alternatives=[cloud_speech.SpeechRecognitionAlternative(transcript=text)], is_final=final)
        for text, final in results])


def test_interim_pieces_make_one_partial_and_finals_are_joined():
    recognition = Recognition(300.0)
    first = recognition.open_segment(0.0)
    recognition.receive(first, response(("to be", False), (" or not to be", False)), 1.0)
    assert recognition.partial == "to be or not to be"
    recognition.receive(first, response(("To be or not to be.", True)), 2.0)
    assert (recognition.partial, recognition.text) == ("", "To be or not to be.")
    recognition.receive(first, response((" That is", False)), 3.0)
    recognition.receive(first, cloud_speech.StreamingRecognizeResponse(), 3.5)  # no results: nothing changes
    assert recognition.partial == "That is"
    recognition.receive(first, response((" That is the question.", True)), 4.0)
    assert recognition.text == "To be or not to be. That is the question."


def test_segments_keep_spoken_order_whichever_finishes_first():
    recognition = Recognition(10.0)
    old = recognition.open_segment(0.0)
    recognition.receive(old, response(("one two", False)), 9.0)
    new = recognition.open_segment(9.5)
    recognition.receive(new, response(("three", False)), 9.6)
    assert recognition.partial == "one two three"
    recognition.receive(new, response(("three four", True)), 12.0)
    recognition.receive(old, response(("one two", True)), 12.5)
    assert recognition.text == "one two three four"


def test_the_cut_waits_for_a_final_result_past_the_seek_point_or_is_forced():
    limit = 100.0
    recognition = Recognition(limit)
    segment = recognition.open_segment(50.0)
    recognition.receive(segment, response(("early", True)), 50.0 + SEEK_CUT_AT * limit - 1)
    assert not recognition.cut_due(50.0 + SEEK_CUT_AT * limit + 1)  # that final came too early to cut at
    recognition.receive(segment, response(("words", False)), 50.0 + SEEK_CUT_AT * limit + 2)
    assert not recognition.cut_due(50.0 + SEEK_CUT_AT * limit + 3)  # interim: mid-phrase
    recognition.receive(segment, response(("words", True)), 50.0 + SEEK_CUT_AT * limit + 4)
    assert recognition.cut_due(50.0 + SEEK_CUT_AT * limit + 4)  # a phrase just ended: cut here
    fresh = Recognition(limit)
    fresh.open_segment(0.0)
    assert not fresh.cut_due(FORCE_CUT_AT * limit - 0.001)
    assert fresh.cut_due(FORCE_CUT_AT * limit)  # no pause came: cut anyway


def test_an_error_in_a_response_is_a_provider_error():
    recognition = Recognition()
    segment = recognition.open_segment(0.0)
    failed = cloud_speech.StreamingRecognizeResponse(error=status_pb2.Status(code=11, message="Exceeded maximum\n"
                                                                             "allowed stream duration"))
    with pytest.raises(ProviderError, match="failed: OUT_OF_RANGE: Exceeded maximum allowed stream duration$"):
        recognition.receive(segment, failed, 1.0)
