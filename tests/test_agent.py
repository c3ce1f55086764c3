"""The agent's turn through the Call API: the real OpenAI LLM provider against the fake
OpenAI server, eSpeak NG speaking, a leg of memory channels as the phone line."""

from __future__ import annotations

import json

import pytest
import trio

from dialog.agent import TURN_APOLOGY
from dialog.call import Call, CallServices
from dialog.tools import builtin_tools, by_name, tool_from_function
from providers.openai.client import OpenAISettings
from providers.openai.llm import OpenAILLM
from providers.registry import build_tts
from tests.fakes.openai_http import CHAT, ChatStream, FakeOpenAI, Stall, ToolCallScript
from tests.phone import SPEECH_RMS, rms, transcript_events
from tests.speech import speak
from tests.test_call import RATE, MemoryLeg

INSTRUCTIONS = "You are the shop's phone agent."


async def opening_hours(day: str) -> str:
    """The shop's opening hours on a day of the week."""
    return "closed" if day == "sunday" else "9 to 5"


@pytest.fixture
async def fake(nursery: trio.Nursery) -> FakeOpenAI:
    fake = FakeOpenAI()
    await nursery.start(fake.serve)
    return fake


def services(fake: FakeOpenAI, tmp_path, transfer_to: str = "") -> CallServices:
    llm = OpenAILLM(OpenAISettings(api_key="test-key", base_url=fake.base_url, timeout=5.0), model="gpt-test")
    return CallServices(asr=None, tts=build_tts("local", {}), llm=llm, instructions=INSTRUCTIONS,
                        tools=by_name([*builtin_tools(transfer_to), tool_from_function(opening_hours)]),
                        transcripts_dir=str(tmp_path))


async def turn(call_services: CallServices, caller_said: str, leg: MemoryLeg | None = None) -> tuple[Call, MemoryLeg, bool]:
    """One agent turn on a fresh line, after the caller said ``caller_said``: the call,
    the line, and what respond() returned."""
    leg = leg or MemoryLeg()
    async with trio.open_nursery() as nursery:
        await nursery.start(leg.pacer.run, leg.sink)
        call = Call(leg, call_services, nursery)
        call.history.append({"role": "user", "content": caller_said})
        heard = await call.agent.respond()
        nursery.cancel_scope.cancel()
    return call, leg, heard


def spoken_frames(leg: MemoryLeg) -> int:
    return sum(frame is not None and rms(frame) > SPEECH_RMS for frame in leg.sent)


async def test_a_reply_streams_into_speech_and_the_history(fake, tmp_path):
    fake.script(CHAT, ChatStream.of("Hello! ", "We open ", "at nine. ", "See you", " soon.", pause=0.05))
    call, leg, heard = await turn(services(fake, tmp_path), "When do you open?")
    assert heard is True
    (request,) = fake.to(CHAT)
    assert request.json["messages"] == [{"role": "system", "content": INSTRUCTIONS},
                                        {"role": "user", "content": "When do you open?"}]
    assert [tool["function"]["name"] for tool in request.json["tools"]] == ["hangup", "opening_hours"]
    assert call.history[-1] == {"role": "assistant", "content": "Hello! We open at nine. See you soon."}
    assert spoken_frames(leg) * 0.02 > 1.0  # over a second of speech reached the line
    agent = [e for e in transcript_events(tmp_path) if e["kind"] == "agent"]
    assert [e["text"] for e in agent] == ["Hello! We open at nine. See you soon."]


async def test_a_tool_call_runs_and_the_model_answers_with_its_result(fake, tmp_path):
    fake.script(CHAT,
                ChatStream.of(tool_calls=[ToolCallScript("call_7", "opening_hours", '{"day": "sunday"}')]),
                ChatStream.of("Sorry, we are closed on Sundays."))
    call, _, heard = await turn(services(fake, tmp_path), "Are you open on Sunday?")
    assert heard is True
    first, second = fake.to(CHAT)
    assert second.json["messages"][-2:] == [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_7", "type": "function", "function": {"name": "opening_hours", "arguments": '{"day": "sunday"}'}}]},
        {"role": "tool", "tool_call_id": "call_7", "content": "closed"}]
    assert call.history[-1] == {"role": "assistant", "content": "Sorry, we are closed on Sundays."}
    events = transcript_events(tmp_path)
    assert [(e["kind"], e.get("name")) for e in events if e["kind"].startswith("tool")] == [
        ("tool", "opening_hours"), ("tool-result", "opening_hours")]


async def test_a_wrong_tool_call_is_answered_with_an_error_the_model_can_read(fake, tmp_path):
    fake.script(CHAT,
                ChatStream.of(tool_calls=[ToolCallScript("c1", "opening_hours", '{"weekday": "monday"}'),
                                          ToolCallScript("c2", "launch_rocket", "{}")]),
                ChatStream.of("Let me check that again."))
    assert (await turn(services(fake, tmp_path), "Monday?"))[2] is True
    results = {m["tool_call_id"]: m["content"] for m in fake.to(CHAT)[1].json["messages"] if m["role"] == "tool"}
    assert results["c1"].startswith("error: unknown arguments ['weekday'], missing ['day']")
    assert results["c2"] == "error: there is no tool named 'launch_rocket'"


async def test_the_hangup_tool_ends_the_call_after_the_goodbye_is_heard(fake, tmp_path):
    fake.script(CHAT, ChatStream.of("Goodbye, and thank you for calling.", tool_calls=[ToolCallScript("h", "hangup", "{}")]),
                ChatStream.of())
    leg = MemoryLeg()
    async with trio.open_nursery() as nursery:
        await nursery.start(leg.pacer.run, leg.sink)
        call = Call(leg, services(fake, tmp_path), nursery)
        call.history.append({"role": "user", "content": "That's all, bye."})
        await call.agent.respond()
        pytest.fail("the hangup tool should have ended the call")  # not reached: the nursery is cancelled
    assert leg.hung_up
    assert leg.pacer.queued_ms == 0  # the goodbye was played to its end first
    assert spoken_frames(leg) * 0.02 > 1.0
    kinds = [e["kind"] for e in transcript_events(tmp_path)]
    assert kinds.index("agent") < kinds.index("tool") < kinds.index("hangup")


async def test_the_transfer_tool_refers_the_caller_to_the_configured_target(fake, tmp_path):
    fake.script(CHAT, ChatStream.of(tool_calls=[ToolCallScript("t", "transfer", "{}")]),
                ChatStream.of("Putting you through now."))
    leg = MemoryLeg()
    transfers: list[str] = []

    async def transfer(target: str) -> bool:
        transfers.append(target)
        return False  # the PBX refused: the call stays up

    leg.transfer = transfer
    assert (await turn(services(fake, tmp_path, transfer_to="sip:200@pbx"), "A person, please.", leg))[2] is True
    assert transfers == ["sip:200@pbx"]
    assert [e["kind"] for e in transcript_events(tmp_path)][-2:] == ["transfer", "transfer-failed"]


async def test_barge_in_cancels_the_models_request_and_keeps_what_was_heard(fake, tmp_path):
    sentences = [f"This is sentence number {n} of a long answer. " for n in ("one", "two", "three", "four", "five")]
    fake.script(CHAT, ChatStream.of(*sentences, pause=0.8))
    leg = MemoryLeg()
    async with trio.open_nursery() as nursery:
        await nursery.start(leg.pacer.run, leg.sink)
        call = Call(leg, services(fake, tmp_path), nursery)
        nursery.start_soon(call.run_ears)
        call.history.append({"role": "user", "content": "Tell me everything."})

        async def interrupt() -> None:
            await trio.sleep(1.5)
            await leg.talk(speak("stop, stop, I have heard enough", RATE))

        nursery.start_soon(interrupt)
        finished = await call.agent.respond()
        with trio.fail_after(5):
            await fake.to(CHAT)[0].finished.wait()
        nursery.cancel_scope.cancel()
    assert finished is False
    (request,) = fake.to(CHAT)  # no retry, no second round
    assert request.disconnected  # the model's stream was closed mid-reply
    heard = call.history[-1]
    full = "".join(sentences).strip()
    assert heard["role"] == "assistant" and full.startswith(heard["content"]) and len(heard["content"]) < len(full)
    interrupted = [e for e in transcript_events(tmp_path) if e["kind"] == "agent"]
    assert interrupted[-1]["interrupted"] is True and interrupted[-1]["text"] == heard["content"]
    assert json.dumps(interrupted[-1]["intended"]).count("sentence number") < len(sentences)


@pytest.mark.parametrize("failure", ["timeout", "dropped"])
async def test_a_failing_model_costs_the_turn_not_the_call(fake, tmp_path, failure):
    if failure == "timeout":
        fake.script(CHAT, Stall())
    else:  # the stream breaks after its first sentence
        fake.script(CHAT, ChatStream.of("We open at nine. ", "And we clo", "se at six.", pause=0.05, drop_after=3))
    llm = OpenAILLM(OpenAISettings(api_key="test-key", base_url=fake.base_url, timeout=1.0, max_retries=0))
    call_services = CallServices(asr=None, tts=build_tts("local", {}), llm=llm, transcripts_dir=str(tmp_path))
    call, leg, heard = await turn(call_services, "When do you open?")
    assert heard is False
    spoken = [h["content"] for h in call.history if h["role"] == "assistant"]
    # What the model had said before it failed was played and kept; then the apology.
    assert spoken == (["We open at nine."] if failure == "dropped" else []) + [TURN_APOLOGY]
    errors = [e["text"] for e in transcript_events(tmp_path) if e["kind"] == "error"]
    assert len(errors) == 1 and "OpenAI chat" in errors[0] and "test-key" not in errors[0]
