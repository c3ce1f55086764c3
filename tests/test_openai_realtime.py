"""OpenAIRealtime (STS) over trio-websocket against the fake Realtime server on loopback."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import aclosing

import numpy as np
import pytest
import trio

from media.audio import frame_bytes
from media.codecs import PCMU
from providers.base import (
    AgentAudio,
    CallerSpeechStarted,
    CallerSpeechStopped,
    ProviderError,
    ResponseDone,
    SpokenText,
    StsEvent,
    ToolCall,
    ToolSpec,
)
from providers.openai.client import OpenAISettings
from providers.openai.realtime import OpenAIRealtime, RealtimeSession
from tests.fakes.openai_realtime import FakeRealtime, Reply, ToolScript
from tests.speech import tone

KEY = "sk-test-secret-key"
WEATHER = ToolSpec("weather", "The weather in a city",
                   {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
MULAW = PCMU.transcoder()
#: Guards against a hang only; no test asserts a time.
HANG_GUARD = 10


@pytest.fixture
async def fake(nursery: trio.Nursery) -> FakeRealtime:
    fake = FakeRealtime()
    fake.base_url = await nursery.start(fake.serve)
    return fake


def sts(fake: FakeRealtime, key: str = KEY, **options) -> OpenAIRealtime:
    return OpenAIRealtime(OpenAISettings(api_key=key, base_url=fake.base_url, timeout=5), **options)


async def send(session: RealtimeSession, pcm: bytes, rate: int) -> None:
    """The caller's audio in 20 ms frames, as the media plane sends it."""
    step = frame_bytes(rate)
    for start in range(0, len(pcm), step):
        await session.send_audio(pcm[start:start + step])


async def until_done(session: RealtimeSession, replies: int = 1) -> list[StsEvent]:
    """Events up to and including the ``replies``-th ResponseDone."""
    events: list[StsEvent] = []
    with trio.fail_after(HANG_GUARD):
        async with aclosing(session.events()) as stream:
            async for event in stream:
                events.append(event)
                if isinstance(event, ResponseDone):
                    replies -= 1
                    if not replies:
                        return events
    raise AssertionError("events() ended without ResponseDone")


def agent_pcm(events: Sequence[StsEvent]) -> bytes:
    return b"".join(event.pcm for event in events if isinstance(event, AgentAudio))


async def test_a_full_turn_on_an_8khz_call_is_mulaw_both_ways(fake: FakeRealtime, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    fake.caller_turn_ms = 400
    fake.caller_transcript = "what is the weather"
    fake.replies.append(Reply(audio_ms=600, transcript="It is sunny today", chunks=4))
    caller = tone(400, 8000, hz=350, amplitude=6000)
    async with sts(fake).connect(8000, "Be brief.", [WEATHER]) as session:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send, session, caller, 8000)
            events = await until_done(session)
    conn = fake.last
    assert (conn.path, conn.query) == ("/v1/realtime", {"model": "gpt-realtime"})
    assert conn.headers["authorization"] == f"Bearer {KEY}"
    assert "openai-beta" not in conn.headers
    assert bytes(conn.audio) == MULAW.encode(caller)  # byte-exact, no resampling
    [item_id] = conn.agent_audio
    assert agent_pcm(events) == MULAW.decode(bytes(conn.agent_audio[item_id]))
    assert len(agent_pcm(events)) == 600 * 8 * 2  # 600 ms at the call's 8 kHz
    assert {event.item_id for event in events if isinstance(event, AgentAudio)} == {item_id}
    kinds = [type(event) for event in events if not isinstance(event, (AgentAudio, SpokenText))]
    assert kinds == [CallerSpeechStarted, CallerSpeechStopped, ResponseDone]
    said = [(e.role, e.text) for e in events if isinstance(e, SpokenText) and e.final]
    assert said == [("user", "what is the weather"), ("assistant", "It is sunny today")]
    assert events.index(next(e for e in events if isinstance(e, AgentAudio))) > \
        events.index(SpokenText("user", "what is the weather", final=True))
    assert KEY not in caplog.text


async def test_a_16khz_call_is_pcm16_at_24khz_on_the_wire_and_the_call_rate_back(fake: FakeRealtime) -> None:
    fake.replies.append(Reply(audio_ms=600, transcript="Hello", chunks=3))
    caller = tone(500, 16000, hz=350, amplitude=6000)
    async with sts(fake, turn_detection="none").connect(16000, "Be brief.") as session:
        await send(session, caller, 16000)
        await session.respond()  # our VAD ended the turn: commit, then ask
        events = await until_done(session)
    conn = fake.last
    assert conn.session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert conn.session["audio"]["input"]["turn_detection"] is None
    assert conn.types()[-2:] == ["input_audio_buffer.commit", "response.create"]
    assert abs(len(conn.audio) // 2 - 24000 * 500 // 1000) <= 2  # 500 ms at 24 kHz
    assert abs(len(agent_pcm(events)) // 2 - 16000 * 600 // 1000) <= 2  # 600 ms at 16 kHz
    assert np.abs(np.frombuffer(agent_pcm(events), "<i2")).max() > 4000  # the tone, not silence


async def test_session_update_carries_the_configuration(fake: FakeRealtime) -> None:
    realtime = sts(fake, voice="marin", max_output_tokens=250, turn_detection="semantic_vad")
    async with realtime.connect(8000, "You are the front desk of Hotel Trio.", [WEATHER]) as session:
        await session.respond()
        await until_done(session)
    session_update = fake.last.session
    assert fake.last.types()[0] == "session.update"
    assert session_update["instructions"] == "You are the front desk of Hotel Trio."
    assert session_update["audio"]["output"]["voice"] == "marin"
    assert session_update["max_output_tokens"] == 250
    assert session_update["audio"]["input"]["turn_detection"] == {"type": "semantic_vad"}
    assert session_update["tools"] == [{"type": "function", "name": "weather",
                                        "description": "The weather in a city",
                                        "parameters": dict(WEATHER.parameters)}]


async def test_a_preview_model_speaks_the_beta_dialect_with_its_header(fake: FakeRealtime) -> None:
    fake.replies.append(Reply(audio_ms=200, transcript="Hi", chunks=2))
    realtime = sts(fake, model="gpt-4o-realtime-preview", temperature=0.7, max_output_tokens=99)
    async with realtime.connect(8000, "Be brief.", [WEATHER]) as session:
        await session.respond("Greet the caller.")
        events = await until_done(session)
    conn = fake.last
    assert conn.headers["openai-beta"] == "realtime=v1"
    assert conn.query == {"model": "gpt-4o-realtime-preview"}
    assert conn.session["temperature"] == 0.7
    assert conn.session["max_response_output_tokens"] == 99
    assert conn.session["input_audio_format"] == "g711_ulaw"
    assert conn.events[-1] == {"type": "response.create", "response": {"instructions": "Greet the caller."}}
    assert len(agent_pcm(events)) == 200 * 8 * 2  # response.audio.delta understood
    assert SpokenText("assistant", "Hi", final=True) in events


async def test_a_function_call_is_answered_and_the_agent_goes_on(fake: FakeRealtime) -> None:
    fake.replies.extend([Reply(tool=ToolScript("weather", '{"city": "Oslo"}', call_id="call_7")),
                         Reply(audio_ms=300, transcript="Sunny in Oslo")])
    async with sts(fake).connect(8000, "Be brief.", [WEATHER]) as session:
        await session.respond()
        first = await until_done(session)
        [call] = [event for event in first if isinstance(event, ToolCall)]
        assert call == ToolCall("call_7", "weather", '{"city": "Oslo"}')
        await session.tool_result(call.id, '{"sky": "clear"}')
        second = await until_done(session)
    assert fake.last.tool_outputs == [("call_7", '{"sky": "clear"}')]
    assert fake.last.types()[-2:] == ["conversation.item.create", "response.create"]
    assert SpokenText("assistant", "Sunny in Oslo", final=True) in second
    assert len(agent_pcm(second)) == 300 * 8 * 2


async def test_barge_in_truncates_the_playing_item_at_the_heard_milliseconds(fake: FakeRealtime) -> None:
    fake.replies.extend([Reply(audio_ms=900, transcript="Let me tell you a long story", chunks=3,
                               interrupted_after=2),
                         Reply(audio_ms=100)])
    heard: list[StsEvent] = []
    async with sts(fake).connect(8000, "Be brief.") as session:
        await session.respond()
        with trio.fail_after(HANG_GUARD):
            async with aclosing(session.events()) as stream:
                async for event in stream:  # as a dialog does it
                    heard.append(event)
                    if isinstance(event, CallerSpeechStarted):  # the caller talks over the agent
                        playing = session.current_item_id
                        await session.truncate(playing, 250)  # the pacer had played 250 ms
                    elif isinstance(event, ResponseDone):
                        break
        assert {e.item_id for e in heard if isinstance(e, AgentAudio)} == {playing}
        await session.respond()  # the session goes on: the cancel's error was survivable
        await until_done(session)
    assert fake.last.truncates == [(playing, 250)]
    assert fake.last.types().count("response.cancel") == 1  # the reply was still running when cut


async def test_a_truncate_past_what_was_received_is_clamped(fake: FakeRealtime) -> None:
    fake.replies.extend([Reply(audio_ms=400, chunks=2), Reply(audio_ms=100)])
    async with sts(fake).connect(8000, "Be brief.") as session:
        await session.respond()
        events = await until_done(session)
        [item_id] = {e.item_id for e in events if isinstance(e, AgentAudio)}
        await session.truncate(item_id, 5000)  # playback clock ran ahead of the audio
        await session.truncate("item_unknown", 300)  # refused by the service: survivable
        await session.respond()
        await until_done(session)
    assert fake.last.truncates == [(item_id, 400), ("item_unknown", 300)]


async def test_an_error_event_ends_events_with_the_service_message(fake: FakeRealtime) -> None:
    fake.error = {"type": "server_error", "code": None, "event_id": None,
                  "message": "The server had an error while processing your request."}
    with pytest.raises(ProviderError, match="The server had an error while processing your request"):
        async with sts(fake).connect(8000, "Be brief.") as session:
            await until_done(session)  # and out of the session, as a dialog would let it go
    with trio.fail_after(HANG_GUARD):
        await fake.last.closed.wait()  # the session's socket closed on the way out


async def test_a_dropped_connection_mid_reply_is_a_provider_error(fake: FakeRealtime) -> None:
    fake.replies.append(Reply(audio_ms=600, chunks=3, drop_after=1))
    events: list[StsEvent] = []
    async with sts(fake).connect(8000, "Be brief.") as session:
        await session.respond()
        with pytest.raises(ProviderError, match="connection closed"):
            with trio.fail_after(HANG_GUARD):
                async with aclosing(session.events()) as stream:
                    async for event in stream:
                        events.append(event)
        with pytest.raises(ProviderError, match="connection closed"):
            await session.send_audio(tone(20, 8000, hz=350, amplitude=6000))
    assert len(agent_pcm(events)) == 200 * 8 * 2  # the one chunk that came before the drop


async def test_cancelling_the_session_closes_the_socket(fake: FakeRealtime) -> None:
    with trio.CancelScope() as scope:
        async with sts(fake).connect(8000, "Be brief.") as session:
            await session.respond()
            await until_done(session)  # the session is live
            scope.cancel()
            await trio.sleep_forever()
    assert scope.cancelled_caught
    with trio.fail_after(HANG_GUARD):
        await fake.last.closed.wait()


async def test_a_refused_key_is_a_provider_error_that_does_not_repeat_it(fake: FakeRealtime) -> None:
    fake.api_key = KEY
    with pytest.raises(ProviderError, match="HTTP 401.*openai.api_key") as error:
        async with sts(fake, key="sk-wrong-key").connect(8000, "Be brief."):
            pytest.fail("connected with a wrong key")
    assert "sk-wrong-key" not in str(error.value)


async def test_an_unreachable_service_is_a_provider_error() -> None:
    with trio.socket.socket() as probe:  # a port nothing listens on
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    realtime = OpenAIRealtime(OpenAISettings(api_key=KEY, base_url=f"http://127.0.0.1:{port}/v1"))
    with pytest.raises(ProviderError, match="cannot connect"):
        async with realtime.connect(8000, "Be brief."):
            pytest.fail("connected to nothing")
