"""AVR connectors: the sans-IO shapes with plain data, then each client against its fake
connector on loopback (tests/fakes/avr.py)."""

from __future__ import annotations

import base64
import json
import struct
import uuid
from contextlib import aclosing

import numpy as np
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from providers.avr.http import AvrAsr, AvrLlm, AvrTts
from providers.avr.protocol import (
    AVR_FRAME_BYTES,
    AvrProtocolError,
    ConnectorError,
    PromptStreamDecoder,
    StsConnection,
    TranscriptAssembler,
    TtsAudioDecoder,
    endpoint,
    error_detail,
    prompt_body,
    shown,
)
from providers.avr.sts import AvrSts
from providers.base import (
    AgentAudio,
    CallerSpeechStarted,
    LlmDone,
    ProviderError,
    SpokenText,
    TextDelta,
    ToolSpec,
)
from providers.registry import build_asr, build_llm, build_sts, build_tts
from tests.fakes.avr import ASR_PATH, LLM_PATH, TTS_PATH, FakeAvrHttp, FakeAvrSts, FakeStsCall, wait_for_init
from tests.speech import tone

#: A guard against a hang, never a measure of speed.
HANG_GUARD = 10


def dominant_hz(pcm: bytes, rate: int) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(float)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))


def audio_message(pcm: bytes) -> str:
    return json.dumps({"type": "audio", "audio": base64.b64encode(pcm).decode()})


def wav_header(rate: int) -> bytes:
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    return (b"RIFF" + struct.pack("<I", 0xFFFFFFFF) + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
            + b"LIST" + struct.pack("<I", 5) + b"odd!!\x00" + b"data" + struct.pack("<I", 0xFFFFFFFF))


# --- sans-IO: STS ---------------------------------------------------------------------


def test_sts_init_carries_the_uuid() -> None:
    assert json.loads(StsConnection(8000, "call-7").start()) == {"type": "init", "uuid": "call-7"}


def test_sts_caller_audio_goes_in_20ms_frames_at_8k() -> None:
    core = StsConnection(8000, "u")
    pcm = bytes(range(256)) * 3  # 768 bytes: two frames and 128 bytes over
    first = core.send_audio(pcm)
    assert [json.loads(m)["type"] for m in first] == ["audio", "audio"]
    sent = b"".join(base64.b64decode(json.loads(m)["audio"]) for m in first)
    assert sent == pcm[:2 * AVR_FRAME_BYTES]
    second = core.send_audio(bytes(AVR_FRAME_BYTES - 128))
    assert base64.b64decode(json.loads(second[0])["audio"]) == pcm[640:] + bytes(192)


def test_sts_caller_audio_of_a_16k_call_is_converted_to_8k() -> None:
    core = StsConnection(16000, "u")
    messages = core.send_audio(tone(1000, 16000, hz=1000))
    frames = [base64.b64decode(json.loads(m)["audio"]) for m in messages]
    assert all(len(frame) == AVR_FRAME_BYTES for frame in frames)
    received = b"".join(frames)
    assert 7000 * 2 <= len(received) <= 8000 * 2  # one second at 8 kHz, less the filter's lag
    assert dominant_hz(received, 8000) == pytest.approx(1000, abs=10)


def test_sts_agent_audio_comes_back_at_the_call_rate() -> None:
    pcm = tone(200, 8000, hz=500)
    narrow = StsConnection(8000, "u")
    assert narrow.receive(audio_message(pcm)) == [AgentAudio(pcm)]
    wide = StsConnection(16000, "u")
    out = b"".join(e.pcm for e in wide.receive(audio_message(pcm)) + wide.end())
    assert len(out) == 2 * len(pcm)
    assert dominant_hz(out, 16000) == pytest.approx(500, abs=10)
    assert wide.end() == []  # released once


def test_sts_agent_audio_split_mid_sample_is_joined() -> None:
    core = StsConnection(8000, "u")
    assert core.receive(audio_message(b"\x01\x02\x03")) == [AgentAudio(b"\x01\x02")]
    assert core.receive(audio_message(b"\x04")) == [AgentAudio(b"\x03\x04")]


def test_sts_events() -> None:
    core = StsConnection(8000, "u")
    assert core.receive('{"type":"interruption"}') == [CallerSpeechStarted()]
    assert core.receive('{"type":"transcript","role":"agent","text":"Hi there"}') == [SpokenText("assistant", "Hi there")]
    assert core.receive(b'{"type":"transcript","role":"user","text":"hello"}') == [SpokenText("user", "hello")]
    assert core.receive('{"type":"transcript","role":"user"}') == []  # elevenlabs may omit it
    assert core.receive('{"type":"error","message":"Unable to connect"}') == [ConnectorError("Unable to connect")]
    assert core.receive('{"type":"call_started"}') == []


@pytest.mark.parametrize("message", ["not json", "[1, 2]", '{"type":"audio"}', '{"type":"audio","audio":"%%%"}',
                                     '{"type":"transcript","role":"robot","text":"x"}'])
def test_sts_protocol_violations(message: str) -> None:
    with pytest.raises(AvrProtocolError):
        StsConnection(8000, "u").receive(message)


def test_sts_interruption_drops_what_the_resampler_held() -> None:
    core = StsConnection(16000, "u")
    core.receive(audio_message(tone(100, 8000, hz=500)))
    core.receive('{"type":"interruption"}')
    assert core.end() == []  # the cut-off reply's tail is not played later


def test_sts_digits() -> None:
    core = StsConnection(8000, "u")
    assert json.loads(core.send_digit("5")) == {"type": "dtmf_digit", "digit": "5"}
    assert json.loads(core.send_digit("#")) == {"type": "dtmf_digit", "digit": "#"}
    for bad in ("", "55", "x"):
        with pytest.raises(ValueError):
            core.send_digit(bad)


# --- sans-IO: ASR, LLM, TTS, HTTP -----------------------------------------------------


def test_transcript_segments_are_chunks() -> None:
    assembler = TranscriptAssembler()
    assembler.feed(b"hello ", chunk_start=True)
    assembler.feed(b"there", chunk_end=True)
    assembler.feed(b"how are you", chunk_start=True, chunk_end=True)
    assert assembler.text() == "hello there how are you"
    unframed = TranscriptAssembler()
    unframed.feed(b"just ")
    unframed.feed(b"one")
    assert unframed.text() == "just one"


REPLY = ["Hello", ", wörld", "! Ça va? ", "😀 fine."]


@given(st.lists(st.integers(min_value=0, max_value=200), max_size=8))
def test_prompt_stream_objects_split_anywhere(cuts: list[int]) -> None:
    items = [{"type": "text", "content": part} for part in REPLY]
    items.insert(2, {"type": "audio", "content": "AAAA"})  # a type trivox's LLM cannot carry: skipped
    body = "".join(json.dumps(item, ensure_ascii=False) for item in items).encode()
    decoder = PromptStreamDecoder()
    deltas, last = [], 0
    for cut in sorted({min(c, len(body)) for c in cuts}):
        deltas += decoder.feed(body[last:cut])
        last = cut
    deltas += decoder.feed(body[last:]) + decoder.close()
    assert deltas == REPLY


def test_prompt_stream_bare_text_and_cut_off_objects() -> None:
    legacy = PromptStreamDecoder()  # avr-llm-openai of 2024 writes the text itself
    assert legacy.feed(b"Hi th") + legacy.feed(b"ere {x}") + legacy.close() == ["Hi th", "ere {x}"]
    cut = PromptStreamDecoder()
    assert cut.feed(b'{"type":"text","content":"a"}{"type":"te') == ["a"]
    with pytest.raises(AvrProtocolError):
        cut.close()


def test_prompt_body_keeps_the_text_turns() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Rome?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function"}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        {"role": "assistant", "content": [{"type": "text", "text": "Sunny"}, {"type": "text", "text": "."}]},
        {"role": "user", "content": "Thanks"},
    ]
    assert prompt_body(messages, "call-1") == {
        "uuid": "call-1",
        "message": "Thanks",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Rome?"},
                     {"role": "assistant", "content": "Sunny."}, {"role": "user", "content": "Thanks"}],
    }


def feed_in_pieces(decoder: TtsAudioDecoder, body: bytes, size: int) -> bytes:
    out = b"".join(decoder.feed(body[i:i + size]) for i in range(0, len(body), size))
    return out + decoder.flush()


def test_tts_audio_at_the_rate_asked_for() -> None:
    pcm = tone(500, 8000, hz=440)
    assert feed_in_pieces(TtsAudioDecoder(8000), pcm, 333) == pcm  # odd pieces: samples joined
    wide = feed_in_pieces(TtsAudioDecoder(24000), pcm, 320)
    assert len(wide) == 3 * len(pcm)
    assert dominant_hz(wide, 24000) == pytest.approx(440, abs=10)


def test_tts_wav_header_is_skipped_and_its_rate_used() -> None:
    pcm = tone(300, 16000, hz=440)
    assert feed_in_pieces(TtsAudioDecoder(16000), wav_header(16000) + pcm, 7) == pcm
    narrow = feed_in_pieces(TtsAudioDecoder(8000), wav_header(16000) + pcm, 1000)
    assert abs(len(narrow) - len(pcm) // 2) <= 4


def test_tts_short_bodies() -> None:
    assert feed_in_pieces(TtsAudioDecoder(8000), b"RI", 1) == b"RI"  # two bytes of audio, not a header
    with pytest.raises(AvrProtocolError):
        feed_in_pieces(TtsAudioDecoder(8000), wav_header(8000)[:30], 100)


def test_endpoints_and_error_details() -> None:
    assert endpoint("http://asr:6010", "/speech-to-text-stream") == "http://asr:6010/speech-to-text-stream"
    assert endpoint("http://asr:6010/", "/speech-to-text-stream") == "http://asr:6010/speech-to-text-stream"
    assert endpoint("http://llm:6002/prompt-stream?x=1", "/other") == "http://llm:6002/prompt-stream?x=1"
    assert shown("http://user:secret@asr:6010/x?a=1") == "http://asr:6010/x?a=1"
    assert error_detail(b'{"message": "Text is required"}') == "Text is required"
    assert error_detail(b'{"error": "Failed to generate speech"}') == "Failed to generate speech"
    assert error_detail(b"Error with\nSpeech API") == "Error with Speech API"
    assert len(error_detail(b"x" * 1000)) == 200


# --- STS against the fake connector ---------------------------------------------------


@pytest.fixture
def connector(nursery):
    """Start a fake STS connector running ``script`` (in the test's nursery, so what the
    client raises reaches the test as itself)."""

    async def start(script=wait_for_init) -> FakeAvrSts:
        return await nursery.start(FakeAvrSts(script).serve)

    return start


async def run_sts(fake: FakeAvrSts, rate: int, *, send: bytes = b""):
    """Connect as call "call-42", send ``send`` as 20 ms frames at ``rate``, collect every
    event until the session ends; returns (fake call, events)."""
    events = []
    with trio.fail_after(HANG_GUARD):
        async with AvrSts(fake.url).connect(rate, "", call_id="call-42") as session:
            frame = rate // 50 * 2
            for i in range(0, len(send), frame):
                await session.send_audio(send[i:i + frame])
            async for event in session.events():
                events.append(event)
    return fake.calls[0], events


async def test_sts_turn_at_8k(connector) -> None:
    speech, reply = tone(100, 8000, hz=300), tone(120, 8000, hz=600)

    async def script(call: FakeStsCall) -> None:
        await call.until(lambda c: len(c.caller_audio) >= len(speech))
        await call.transcript("user", "hello")
        await call.send_audio(reply)
        await call.transcript("agent", "Hi, how can I help?")
        await call.close()

    call, events = await run_sts(await connector(script), 8000, send=speech)
    assert call.messages[0] == {"type": "init", "uuid": "call-42"}
    assert {m["type"] for m in call.messages[1:]} == {"audio"}
    assert all(len(base64.b64decode(m["audio"])) == AVR_FRAME_BYTES for m in call.messages[1:])
    assert bytes(call.caller_audio) == speech
    assert events[0] == SpokenText("user", "hello")
    assert events[-1] == SpokenText("assistant", "Hi, how can I help?")
    assert b"".join(e.pcm for e in events if isinstance(e, AgentAudio)) == reply


async def test_sts_turn_at_16k(connector) -> None:
    speech, reply = tone(1000, 16000, hz=1000), tone(400, 8000, hz=1000)

    async def script(call: FakeStsCall) -> None:
        await call.until(lambda c: len(c.caller_audio) >= 7000 * 2)
        await call.send_audio(reply)
        await call.close()

    call, events = await run_sts(await connector(script), 16000, send=speech)
    assert dominant_hz(bytes(call.caller_audio), 8000) == pytest.approx(1000, abs=10)
    agent = b"".join(e.pcm for e in events)
    assert all(isinstance(e, AgentAudio) for e in events)
    assert len(agent) == 2 * len(reply)
    assert dominant_hz(agent, 16000) == pytest.approx(1000, abs=10)


async def test_sts_interruption_mid_reply(connector) -> None:
    async def script(call: FakeStsCall) -> None:
        await call.until(lambda c: bool(c.messages))
        await call.send_audio(tone(60, 8000, hz=400))
        await call.interrupt()
        await call.send_audio(tone(40, 8000, hz=400))
        await call.close()

    _, events = await run_sts(await connector(script), 8000)
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["AgentAudio"] * 3 + ["CallerSpeechStarted"] + ["AgentAudio"] * 2


async def test_sts_error_is_a_provider_error(connector) -> None:
    async def script(call: FakeStsCall) -> None:
        await call.until(lambda c: bool(c.messages))
        await call.error("Failed to initialize Gemini connection")

    with pytest.raises(ProviderError, match="Failed to initialize Gemini connection"):
        await run_sts(await connector(script), 8000)


async def test_sts_abrupt_close_is_a_provider_error(connector) -> None:
    async def script(call: FakeStsCall) -> None:
        await call.until(lambda c: bool(c.messages))
        await call.send_audio(tone(20, 8000, hz=400))
        await call.drop()

    with pytest.raises(ProviderError, match="1006"):
        await run_sts(await connector(script), 8000)


async def test_sts_digits_uuid_and_what_avr_lacks(connector, caplog) -> None:
    async def script(call: FakeStsCall) -> None:
        await call.until(lambda c: any(m["type"] == "dtmf_digit" for m in c.messages))
        await call.close()

    fake = await connector(script)
    with trio.fail_after(HANG_GUARD):
        async with AvrSts(fake.url).connect(8000, "Be nice.", [ToolSpec("avr_hangup", "end")]) as session:
            await session.truncate("", 300)
            await session.respond("Greet the caller.")
            with pytest.raises(ProviderError, match="own tools"):
                await session.tool_result("c1", "done")
            await session.send_digit("7")
            assert [e async for e in session.events()] == []
    [call] = fake.calls
    assert [r.getMessage() for r in caplog.records if "not sent" in r.getMessage()] == [
        f"AVR STS at {fake.url} takes its instructions and tools from the connector's own configuration; "
        "the ones given here are not sent"]
    assert uuid.UUID(call.messages[0]["uuid"]).version == 4
    assert call.messages[1:] == [{"type": "dtmf_digit", "digit": "7"}]  # nothing for truncate or respond


async def test_sts_cancel_closes_the_socket(connector) -> None:
    fake = await connector()
    with trio.CancelScope() as scope:
        async with AvrSts(fake.url, call_id="c-9").connect(8000, "") as session:
            await fake.connected.wait()
            await fake.calls[0].until(lambda c: bool(c.messages))
            scope.cancel()
            async for _ in session.events():
                pass
    assert scope.cancelled_caught
    with trio.fail_after(HANG_GUARD):
        await fake.calls[0].closed.wait()
    assert fake.calls[0].messages == [{"type": "init", "uuid": "c-9"}]


async def test_sts_unreachable_and_bad_urls() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    with pytest.raises(ProviderError, match="unreachable"):
        async with AvrSts(f"ws://127.0.0.1:{port}").connect(8000, ""):
            pass
    with pytest.raises(ProviderError, match="ws://"):
        AvrSts("http://sts:6030")


# --- ASR, LLM, TTS against the fake services ------------------------------------------


@pytest.fixture
async def services(nursery) -> FakeAvrHttp:
    return await nursery.start(FakeAvrHttp().serve)


async def recognise(asr: AvrAsr, pcm: bytes, rate: int, **kwargs) -> str:
    stream = await asr.open_stream(rate, **kwargs)
    try:
        frame = rate // 50 * 2
        for i in range(0, len(pcm), frame):
            await stream.send_audio(pcm[i:i + frame])
        return (await stream.finish()).text
    finally:
        await stream.aclose()


async def test_asr_utterance_to_transcript(services: FakeAvrHttp) -> None:
    services.transcripts, services.transcripts_early = ["hello there", "how are you"], True
    speech = tone(500, 8000, hz=300)
    text = await recognise(AvrAsr(services.url, tail_silence_ms=250), speech, 8000, call_id="call-1")
    assert text == "hello there how are you"
    [exchange] = services.exchanges
    assert (exchange.method, exchange.path) == ("POST", ASR_PATH)
    assert exchange.headers["content-type"] == "audio/l16"
    assert exchange.headers["transfer-encoding"] == "chunked"
    assert exchange.headers["x-uuid"] == "call-1"
    assert bytes(exchange.body) == speech + bytes(250 * 16)  # the utterance, then 250 ms of silence


async def test_asr_of_a_16k_call_sends_8k(services: FakeAvrHttp) -> None:
    services.transcripts = ["one"]
    assert await recognise(AvrAsr(services.url + ASR_PATH, tail_silence_ms=0), tone(500, 16000, hz=1000), 16000) == "one"
    body = bytes(services.exchanges[0].body)
    assert len(body) == 500 * 16  # all of it at 8 kHz once the resampler is flushed
    assert dominant_hz(body, 8000) == pytest.approx(1000, abs=10)


async def test_asr_error_status(services: FakeAvrHttp) -> None:
    services.failures[ASR_PATH] = (500, b'{"message": "Error receiving audio stream"}')
    with pytest.raises(ProviderError, match="AVR ASR .* answered 500: Error receiving audio stream"):
        await recognise(AvrAsr(services.url), tone(100, 8000, hz=300), 8000)


async def test_asr_close_mid_utterance(services: FakeAvrHttp) -> None:
    stream = await AvrAsr(services.url).open_stream(8000)
    await stream.send_audio(tone(100, 8000, hz=300))
    await stream.aclose()
    await stream.aclose()
    with trio.fail_after(HANG_GUARD):
        await services.exchanges[0].ended.wait()
    assert services.exchanges[0].disconnected and not services.exchanges[0].complete
    with pytest.raises(trio.ClosedResourceError):
        await stream.send_audio(b"\x00\x00")


async def test_llm_streamed_deltas(services: FakeAvrHttp) -> None:
    body = "".join(json.dumps({"type": "text", "content": p}, ensure_ascii=False) for p in ["Hel", "lo, wörld", "!"])
    body = body.encode()
    cut = body.index("ö".encode()) + 1  # between the two bytes of ö
    services.reply_chunks = [body[:7], body[7:cut], body[cut:]]
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    events = [e async for e in AvrLlm(services.url).chat(messages, call_id="call-3")]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Hello, wörld!"
    assert events[-1] == LlmDone("stop") and sum(isinstance(e, LlmDone) for e in events) == 1
    [exchange] = services.exchanges
    assert exchange.path == LLM_PATH
    assert exchange.json() == {"uuid": "call-3", "message": "Hi", "messages": messages}


async def test_llm_error_status(services: FakeAvrHttp) -> None:
    services.failures[LLM_PATH] = (500, b'{"message": "Error communicating with Anthropic API"}')
    with pytest.raises(ProviderError, match="answered 500: Error communicating with Anthropic API"):
        [e async for e in AvrLlm(services.url).chat([{"role": "user", "content": "Hi"}])]


async def test_llm_cancel_closes_the_request(services: FakeAvrHttp) -> None:
    services.reply_chunks, services.hold = [b'{"type":"text","content":"Hello"}'], True
    async with aclosing(AvrLlm(services.url).chat([{"role": "user", "content": "Hi"}])) as reply:
        async for event in reply:
            assert event == TextDelta("Hello")
            break
    with trio.fail_after(HANG_GUARD):
        await services.exchanges[0].ended.wait()
    assert services.exchanges[0].disconnected


@pytest.mark.parametrize("rate", [8000, 16000, 24000])
async def test_tts_streamed_audio_resampled(services: FakeAvrHttp, rate: int) -> None:
    services.audio = tone(1000, 8000, hz=440)
    chunks = [c async for c in AvrTts(services.url).synthesize("Hello there.", rate, call_id="call-5")]
    audio = b"".join(chunks)
    assert len(audio) == len(services.audio) * rate // 8000
    assert dominant_hz(audio, rate) == pytest.approx(440, abs=10)
    assert len(chunks) > 1  # streamed, not one block at the end
    [exchange] = services.exchanges
    assert (exchange.path, exchange.json(), exchange.headers["x-uuid"]) == (TTS_PATH, {"text": "Hello there."}, "call-5")


async def test_tts_error_status_and_empty_text(services: FakeAvrHttp) -> None:
    services.failures[TTS_PATH] = (500, b'{"message": "Error processing text-to-speech request"}')
    with pytest.raises(ProviderError, match="AVR TTS at .* answered 500: Error processing text-to-speech request"):
        [c async for c in AvrTts(services.url).synthesize("Hi", 8000)]
    assert [c async for c in AvrTts(services.url).synthesize("  ", 8000)] == []
    assert len(services.exchanges) == 1  # no request for nothing to say


async def test_tts_cancel_closes_the_request(services: FakeAvrHttp) -> None:
    services.audio, services.hold = tone(200, 8000, hz=440), True
    with trio.CancelScope() as scope:
        async with aclosing(AvrTts(services.url).synthesize("Hello", 8000)) as speech:
            async for _ in speech:
                scope.cancel()
    with trio.fail_after(HANG_GUARD):
        await services.exchanges[0].ended.wait()
    assert services.exchanges[0].disconnected


async def test_http_unreachable() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    url = f"http://127.0.0.1:{listener.socket.getsockname()[1]}"
    await listener.aclose()
    with pytest.raises(ProviderError, match="AVR ASR at .* is unreachable"):
        await AvrAsr(url).open_stream(8000)
    with pytest.raises(ProviderError, match="AVR LLM at .* is unreachable"):
        [e async for e in AvrLlm(url).chat([{"role": "user", "content": "Hi"}])]


def test_registry_builds_the_avr_providers() -> None:
    assert isinstance(build_asr("avr", {"url": "http://asr:6010"}), AvrAsr)
    assert isinstance(build_llm("avr", {"url": "http://llm:6002/prompt-stream"}), AvrLlm)
    assert isinstance(build_tts("avr", {"url": "http://tts:6003"}), AvrTts)
    assert isinstance(build_sts("avr", {"url": "ws://sts:6030"}), AvrSts)
