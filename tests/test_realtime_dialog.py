"""A call handed to speech to speech: the real OpenAI Realtime provider against the fake
Realtime server, through the Call API on a leg of memory channels."""

from __future__ import annotations

import json
from functools import partial

import pytest
import trio

from dialog.call import Call, CallServices
from dialog.realtime import RealtimeSettings
from dialog.tools import builtin_tools, by_name, tool_from_function
from media.codecs import PCMU
from providers.openai.client import OpenAISettings
from providers.openai.realtime import OpenAIRealtime
from providers.base import ProviderError
from providers.registry import build_sts, build_tts
from tests.fakes.avr import FakeAvrSts, FakeStsCall
from tests.fakes.openai_realtime import FakeRealtime, Reply, ToolScript
from tests.phone import SPEECH_RMS, rms, transcript_events
from tests.speech import speak, tone
from tests.test_call import RATE, MemoryLeg

INSTRUCTIONS = "You answer the phone for a bakery."


async def todays_bread() -> str:
    """What bread the bakery has today."""
    return "rye and sourdough"


@pytest.fixture
async def fake(nursery: trio.Nursery) -> FakeRealtime:
    fake = FakeRealtime()
    fake.base_url = await nursery.start(fake.serve)
    return fake


def services(fake: FakeRealtime, tmp_path, **realtime) -> CallServices:
    sts = OpenAIRealtime(OpenAISettings(api_key="test-key", base_url=fake.base_url), model="gpt-realtime")
    settings = RealtimeSettings(instructions=INSTRUCTIONS, **realtime)
    return CallServices(asr=None, tts=build_tts("local", {}), sts=sts, realtime=settings,
                        tools=by_name([*builtin_tools(""), tool_from_function(todays_bread)]),
                        transcripts_dir=str(tmp_path))


def agent_frames(leg: MemoryLeg) -> list[bytes]:
    return [frame for frame in leg.sent if frame is not None and rms(frame) > SPEECH_RMS]


async def run_call(leg: MemoryLeg, call_services: CallServices, caller_audio: bytes, *, seconds: float) -> Call:
    """The call for ``seconds``: the realtime dialog, the ears, and the caller talking."""
    async with trio.open_nursery() as nursery:
        await nursery.start(leg.pacer.run, leg.sink)
        call = Call(leg, call_services, nursery)
        nursery.start_soon(call.run_ears)
        nursery.start_soon(call.converse)

        async def caller() -> None:
            await trio.sleep(0.5)
            await leg.talk(caller_audio)

        nursery.start_soon(caller)
        await trio.sleep(seconds)
        nursery.cancel_scope.cancel()
    return call


async def test_greeting_turn_and_reply_reach_the_line_and_the_history(fake, tmp_path):
    fake.caller_turn_ms = 1500  # one turn: the caller's words and a second of silence are 2.5 s
    fake.caller_transcript = "do you have rye bread"
    fake.replies.extend([Reply(audio_ms=600, transcript="Good morning, Bakery Braun."),
                         Reply(audio_ms=800, transcript="Yes, fresh rye today.")])
    leg = MemoryLeg()
    said = speak("do you have rye bread", RATE)
    call = await run_call(leg, services(fake, tmp_path), said, seconds=4.0)
    conn = fake.last
    # The session as configured: mu-law on the wire for an 8 kHz call, our instructions and tools.
    assert conn.pcmu and conn.session["instructions"] == INSTRUCTIONS
    assert [tool["name"] for tool in conn.session["tools"]] == ["hangup", "todays_bread"]
    # Caller audio reached the service as the caller's own mu-law, byte for byte.
    spoken = PCMU.transcoder().encode(said[:RATE])  # its first second
    assert spoken in bytes(conn.audio)
    # Both replies were played in full, at the call's rate.
    assert len(agent_frames(leg)) * 20 == pytest.approx(600 + 800, abs=60)
    assert call.history == [{"role": "assistant", "content": "Good morning, Bakery Braun."},
                            {"role": "user", "content": "do you have rye bread"},
                            {"role": "assistant", "content": "Yes, fresh rye today."}]
    kinds = [(e["kind"], e.get("text")) for e in transcript_events(tmp_path) if e["kind"] in ("agent", "caller")]
    assert kinds == [("agent", "Good morning, Bakery Braun."), ("caller", "do you have rye bread"),
                     ("agent", "Yes, fresh rye today.")]


async def test_barge_in_truncates_the_reply_at_what_the_caller_heard(fake, tmp_path):
    # Server VAD hears a caller turn every second of caller audio. The first turn gets a
    # long reply, whose audio arrives at once; the next turn, a second later, is the
    # caller talking over it.
    fake.caller_turn_ms = 1000
    fake.replies.append(Reply(audio_ms=6000, transcript="We have rye, sourdough, spelt, and many rolls.", chunks=4))
    leg = MemoryLeg()
    said = speak("hello, I am calling about my order, it has not arrived and I am getting worried", RATE)
    call = await run_call(leg, services(fake, tmp_path, greet=False), said, seconds=5.0)
    conn = fake.last
    ((item, played_ms), *_) = conn.truncates
    assert item in conn.agent_audio
    # The truncate says exactly how much agent audio went out on the line before the cut,
    # and nothing of the reply was played after it.
    assert played_ms == len(agent_frames(leg)) * 20
    assert 500 < played_ms < 2000
    heard = [h["content"] for h in call.history if h["role"] == "assistant"]
    full = "We have rye, sourdough, spelt, and many rolls."
    assert len(heard) == 1 and full.startswith(heard[0]) and len(heard[0]) < len(full)
    agent = [e for e in transcript_events(tmp_path) if e["kind"] == "agent"]
    assert [(e["text"], e["interrupted"], e["intended"]) for e in agent] == [(heard[0], True, full)]


async def test_a_function_call_runs_the_tool_and_the_agent_goes_on(fake, tmp_path):
    fake.caller_turn_ms = 1200
    fake.replies.extend([Reply(tool=ToolScript("todays_bread", "{}", call_id="call_9")),
                         Reply(audio_ms=400, transcript="Rye and sourdough.")])
    leg = MemoryLeg()
    call = await run_call(leg, services(fake, tmp_path, greet=False), speak("what bread", RATE), seconds=3.0)
    assert fake.last.tool_outputs == [("call_9", "rye and sourdough")]
    assert call.history[-1] == {"role": "assistant", "content": "Rye and sourdough."}
    results = [e for e in transcript_events(tmp_path) if e["kind"] == "tool-result"]
    assert [(e["name"], e["output"]) for e in results] == [("todays_bread", "rye and sourdough")]


async def test_instructions_are_fetched_per_call_from_a_url(fake, tmp_path):
    """AVR's OPENAI_URL_INSTRUCTIONS: a GET with the call's id in X-AVR-UUID."""
    seen: list[str] = []

    async def serve(stream: trio.SocketStream) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            request += await stream.receive_some(4096)
        seen.append(request.decode())
        body = json.dumps({"system": "You sell cakes."}).encode()
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                              + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n" + body)

    async with trio.open_nursery() as nursery:
        (listener,) = await nursery.start(partial(trio.serve_tcp, serve, 0, host="127.0.0.1"))
        url = f"http://127.0.0.1:{listener.socket.getsockname()[1]}/instructions"
        settings = RealtimeSettings(instructions_url=url)
        assert await settings.resolve("call-42") == "You sell cakes."
        nursery.cancel_scope.cancel()
    assert "x-avr-uuid: call-42" in seen[0].lower()
    (tmp_path / "prompt.txt").write_text("You sell bread.\n")
    assert await RealtimeSettings(instructions_file=str(tmp_path / "prompt.txt")).resolve("x") == "You sell bread."
    assert await RealtimeSettings(instructions="Direct.", instructions_url=url).resolve("x") == "Direct."


async def test_a_dropped_realtime_connection_ends_the_conversation_with_a_provider_error(fake, tmp_path):
    fake.caller_turn_ms = 600
    fake.replies.append(Reply(audio_ms=2000, transcript="This reply never ends.", chunks=4, drop_after=2))
    leg = MemoryLeg()
    with pytest.RaisesGroup(pytest.RaisesExc(ProviderError, match="OpenAI Realtime connection closed mid-session"),
                            flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            await nursery.start(leg.pacer.run, leg.sink)
            call = Call(leg, services(fake, tmp_path, greet=False), nursery)
            nursery.start_soon(call.run_ears)
            nursery.start_soon(leg.talk, speak("are you there", RATE))
            await call.converse()


async def test_an_avr_connector_carries_the_call_with_its_interruptions_and_key_presses(tmp_path):
    """AVR's STS protocol: the call's id in init, 8 kHz audio both ways, ``interruption``
    as the barge-in (no truncate to send: the connector cut its own reply), transcripts
    of both sides, and the caller's key presses passed on as dtmf_digit."""
    greeting = tone(1000, 8000, hz=300)

    async def connector(conn: FakeStsCall) -> None:
        await conn.until(lambda c: len(c.caller_audio) >= 320 * 25)  # half a second of the caller
        await conn.transcript("agent", "Welcome to the bakery.")
        await conn.send_audio(greeting)
        await conn.until(lambda c: len(c.caller_audio) >= 320 * 50)
        await conn.interrupt()
        await conn.transcript("user", "one moment")
        await conn.until(lambda c: any(m.get("type") == "dtmf_digit" for m in c.messages))

    fake = FakeAvrSts(connector)
    leg = MemoryLeg()
    async with trio.open_nursery() as servers:
        await servers.start(fake.serve)
        call_services = CallServices(asr=None, tts=build_tts("local", {}), sts=build_sts("avr", {"url": fake.url}),
                                     realtime=RealtimeSettings(greet=False), transcripts_dir=str(tmp_path))
        async with trio.open_nursery() as nursery:
            await nursery.start(leg.pacer.run, leg.sink)
            call = Call(leg, call_services, nursery)
            nursery.start_soon(call.run_ears)
            nursery.start_soon(call.converse)
            nursery.start_soon(leg.talk, speak("hello, hello, is this the bakery", RATE))
            await fake.connected.wait()
            (conn,) = fake.calls
            with trio.fail_after(10):
                while not any(e["kind"] == "caller" for e in transcript_events(tmp_path)):
                    await trio.sleep(0.05)
            leg.press.send_nowait("5")
            with trio.fail_after(10):
                await conn.until(lambda c: any(m.get("type") == "dtmf_digit" for m in c.messages))
            nursery.cancel_scope.cancel()
        servers.cancel_scope.cancel()
    assert conn.messages[0] == {"type": "init", "uuid": leg.call_id}
    assert [m for m in conn.messages if m["type"] == "dtmf_digit"] == [{"type": "dtmf_digit", "digit": "5"}]
    played = len(agent_frames(leg)) * 20
    assert 0 < played < 1000  # the interruption cut the greeting short
    heard = call.history[0]
    assert heard["role"] == "assistant" and "Welcome to the bakery.".startswith(heard["content"])
    assert call.history[-1] == {"role": "user", "content": "one moment"}
    agent = [e for e in transcript_events(tmp_path) if e["kind"] == "agent"]
    assert agent[0]["interrupted"] is True and agent[0]["intended"] == "Welcome to the bakery."
