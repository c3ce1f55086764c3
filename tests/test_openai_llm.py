"""OpenAILLM: the chat-completion stream's translation on plain data, and the provider
with the real AsyncOpenAI client against the fake OpenAI server on loopback."""

from __future__ import annotations

import json
from contextlib import aclosing
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st
from openai.types.chat import ChatCompletionChunk

from providers.base import LlmDone, ProviderError, TextDelta, ToolCall, ToolSpec
from providers.openai.client import OpenAISettings
from providers.openai.llm import ChatAssembler, OpenAILLM
from tests.fakes.openai_http import CHAT, ChatStream, ErrorReply, FakeOpenAI, Stall, ToolCallScript

KEY = "sk-test-0123456789abcdef"
HELLO = [{"role": "user", "content": "Hello?"}]
WEATHER = ToolCallScript("call_w1", "get_weather", '{"city": "Paris", "unit": "celsius"}', pieces=4)
TIME = ToolCallScript("call_t1", "get_time", '{"timezone": "Europe/Paris"}', pieces=3)


@pytest.fixture
async def fake(nursery: trio.Nursery) -> FakeOpenAI:
    fake = FakeOpenAI()
    await nursery.start(fake.serve)
    return fake


def settings(fake: FakeOpenAI, **changes: Any) -> OpenAISettings:
    return OpenAISettings(**{"api_key": KEY, "base_url": fake.base_url, "timeout": 5.0, **changes})


async def reply(llm: OpenAILLM, messages: list[dict[str, Any]] = HELLO, tools: list[ToolSpec] = ()) -> list[Any]:
    return [event async for event in llm.chat(messages, tools)]


# --- the sans-IO translation, on plain data --------------------------------------------


def chunk(delta: dict[str, Any], finish_reason: str | None = None, index: int = 0) -> ChatCompletionChunk:
    return ChatCompletionChunk.model_validate({
        "id": "c", "object": "chat.completion.chunk", "created": 0, "model": "m",
        "choices": [{"index": index, "delta": delta, "finish_reason": finish_reason}]})


def tool_piece(index: int, arguments: str, **first: str) -> dict[str, Any]:
    function = {"arguments": arguments, **({"name": first["name"]} if "name" in first else {})}
    piece = {"index": index, "function": function, **({"id": first["id"], "type": "function"} if "id" in first else {})}
    return {"tool_calls": [piece]}


def assemble(*chunks: ChatCompletionChunk) -> list[Any]:
    assembler = ChatAssembler()
    events = [event for item in chunks for event in assembler.feed(item)]
    return events + assembler.finish()


def test_text_deltas_then_done_and_empty_content_is_no_delta() -> None:
    events = assemble(chunk({"role": "assistant", "content": ""}), chunk({"content": "Hi"}),
                      chunk({"content": None}), chunk({"content": " there"}), chunk({}, "stop"))
    assert events == [TextDelta("Hi"), TextDelta(" there"), LlmDone("stop")]


def test_tool_call_is_emitted_whole_when_the_choice_finishes() -> None:
    assembler = ChatAssembler()
    assert assembler.feed(chunk(tool_piece(0, "", id="call_1", name="lookup"))) == []
    assert assembler.feed(chunk(tool_piece(0, '{"q": '))) == []
    assert assembler.feed(chunk(tool_piece(0, '"x"}'))) == []
    assert assembler.feed(chunk({}, "tool_calls")) == [ToolCall("call_1", "lookup", '{"q": "x"}')]
    assert assembler.finish() == [LlmDone("tool_calls")]


def test_text_before_tool_calls_and_other_choices_ignored() -> None:
    events = assemble(chunk({"content": "One moment."}), chunk({"content": "ignored"}, index=1),
                      chunk(tool_piece(0, "{}", id="call_1", name="hold")), chunk({}, "tool_calls"))
    assert events == [TextDelta("One moment."), ToolCall("call_1", "hold", "{}"), LlmDone("tool_calls")]


def test_lenient_servers_repeated_names_missing_ids_empty_arguments_no_finish_reason() -> None:
    events = assemble(chunk(tool_piece(0, '{"a":', id="x", name="f")), chunk(tool_piece(0, " 1}", id="x", name="f")),
                      chunk(tool_piece(1, "", name="g")))
    assert events == [ToolCall("x", "f", '{"a": 1}'), ToolCall("call_1", "g", "{}"), LlmDone("tool_calls")]


def test_tool_call_without_a_name_is_a_provider_error() -> None:
    with pytest.raises(ProviderError, match="without a function name"):
        assemble(chunk(tool_piece(0, "{}", id="x")), chunk({}, "tool_calls"))


@given(st.data())
def test_parallel_calls_survive_any_split_and_interleaving(data: st.DataObject) -> None:
    calls = [("call_a", "alpha", '{"x": [1, 2, 3]}'), ("call_b", "beta", '{"y": "zzz"}'), ("call_c", "gamma", "{}")]
    queues = []
    for index, (call_id, name, arguments) in enumerate(calls):
        cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(arguments) - 1)), max_size=4)))
        parts = [arguments[start:end] for start, end in zip([0, *cuts], [*cuts, len(arguments)], strict=True)]
        queues.append([tool_piece(index, parts[0], id=call_id, name=name)] + [tool_piece(index, p) for p in parts[1:]])
    stream = []
    while any(queues):  # the pieces of each call in order, the calls mixed at random
        queue = data.draw(st.sampled_from([q for q in queues if q]))
        stream.append(chunk(queue.pop(0)))
    assert assemble(*stream, chunk({}, "tool_calls")) == [*(ToolCall(*call) for call in calls), LlmDone("tool_calls")]


def test_out_of_range_settings_are_refused() -> None:
    with pytest.raises(ProviderError, match="temperature"):
        OpenAILLM(OpenAISettings(), temperature=2.5)
    with pytest.raises(ProviderError, match="max_tokens"):
        OpenAILLM(OpenAISettings(), max_tokens=0)


# --- the provider against the fake server ----------------------------------------------


async def test_a_streamed_reply_arrives_delta_by_delta(fake: FakeOpenAI) -> None:
    pieces = ["Hello", ",", " how can", " I help", " you today?"]
    fake.script(CHAT, ChatStream.of(*pieces, pause=0.02))
    llm = OpenAILLM(settings(fake))
    events, sent_at_first_delta = [], None
    async for event in llm.chat(HELLO):
        if sent_at_first_delta is None:
            sent_at_first_delta = fake.requests[0].chunks_sent
        events.append(event)
    assert events == [*(TextDelta(piece) for piece in pieces), LlmDone("stop")]
    # role chunk + 5 text chunks + finish chunk + [DONE]: the first delta came long before the end.
    assert sent_at_first_delta is not None and sent_at_first_delta < 4
    await fake.requests[0].finished.wait()
    assert fake.requests[0].completed and not fake.requests[0].disconnected


async def test_the_request_carries_the_configured_model_options_tools_and_history(fake: FakeOpenAI) -> None:
    fake.script(CHAT, ChatStream.of("Sunny."), ChatStream.of("Hi."))
    tool = ToolSpec("get_weather", "The weather in a city now",
                    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
    history = [
        {"role": "system", "content": "You are a phone agent."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_w1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_w1", "content": '{"sky": "sunny"}'},
    ]
    await reply(OpenAILLM(settings(fake), model="gpt-4.1-nano", temperature=0.4, max_tokens=120), history, [tool])
    await reply(OpenAILLM(settings(fake)))
    configured, plain = (request.json for request in fake.to(CHAT))
    assert configured == {"model": "gpt-4.1-nano", "temperature": 0.4, "max_tokens": 120, "stream": True,
                          "messages": history, "tools": [{"type": "function", "function": {
                              "name": "get_weather", "description": "The weather in a city now",
                              "parameters": dict(tool.parameters)}}]}
    assert plain == {"model": "gpt-4o-mini", "temperature": 0.7, "stream": True, "messages": HELLO}
    assert fake.requests[0].headers["authorization"] == f"Bearer {KEY}"


@pytest.mark.parametrize("interleaved", [False, True])
async def test_parallel_tool_calls_are_assembled_from_their_pieces(fake: FakeOpenAI, interleaved: bool) -> None:
    fake.script(CHAT, ChatStream.of(tool_calls=[WEATHER, TIME], interleaved=interleaved))
    events = await reply(OpenAILLM(settings(fake)), tools=[ToolSpec("get_weather", "w"), ToolSpec("get_time", "t")])
    assert events == [ToolCall("call_w1", "get_weather", WEATHER.arguments),
                      ToolCall("call_t1", "get_time", TIME.arguments), LlmDone("tool_calls")]
    assert json.loads(events[0].arguments) == {"city": "Paris", "unit": "celsius"}


@pytest.mark.parametrize("status", [500, 429])
async def test_a_failure_before_the_reply_is_retried(fake: FakeOpenAI, status: int) -> None:
    fake.script(CHAT, ErrorReply(status), ChatStream.of("Back", " again."))
    events = await reply(OpenAILLM(settings(fake, max_retries=2)))
    assert events == [TextDelta("Back"), TextDelta(" again."), LlmDone("stop")]
    assert len(fake.to(CHAT)) == 2


async def test_a_stream_broken_after_the_first_token_is_an_error_and_not_retried(fake: FakeOpenAI) -> None:
    fake.script(CHAT, ChatStream.of("The answer", " is", " forty-two.", drop_after=3), ChatStream.of("Again?"))
    events = []
    with pytest.raises(ProviderError) as error:
        async for event in OpenAILLM(settings(fake, max_retries=2)).chat(HELLO):
            events.append(event)
    assert events == [TextDelta("The answer"), TextDelta(" is")]
    assert "broke off" in str(error.value) and "gpt-4o-mini" in str(error.value)
    assert len(fake.to(CHAT)) == 1


async def test_a_server_that_does_not_answer_times_out(fake: FakeOpenAI) -> None:
    fake.script(CHAT, Stall())
    with pytest.raises(ProviderError, match=r"gpt-4o-mini.* did not answer within 0.2 s") as error:
        await reply(OpenAILLM(settings(fake, timeout=0.2, max_retries=0)))
    assert "\n" not in str(error.value)
    await fake.requests[0].finished.wait()
    assert fake.requests[0].disconnected


async def test_cancelling_the_consumer_closes_the_connection(fake: FakeOpenAI) -> None:
    fake.script(CHAT, ChatStream.of(*["word "] * 50, pause=0.02))
    with trio.CancelScope() as scope:
        async for event in OpenAILLM(settings(fake)).chat(HELLO):
            assert event == TextDelta("word ")
            scope.cancel()  # the caller barged in: the generator is cancelled inside its next read
    await fake.requests[0].finished.wait()
    assert fake.requests[0].disconnected and not fake.requests[0].completed


async def test_closing_the_generator_early_closes_the_connection(fake: FakeOpenAI) -> None:
    fake.script(CHAT, ChatStream.of(*["word "] * 50, pause=0.02))
    async with aclosing(OpenAILLM(settings(fake)).chat(HELLO)) as events:
        async for _ in events:
            break
    await fake.requests[0].finished.wait()
    assert fake.requests[0].disconnected and not fake.requests[0].completed


async def test_a_base_url_with_a_trailing_slash_works(fake: FakeOpenAI) -> None:
    fake.script(CHAT, ChatStream.of("Fine."))
    events = await reply(OpenAILLM(settings(fake, base_url=fake.base_url + "/")))
    assert events == [TextDelta("Fine."), LlmDone("stop")]
    assert fake.requests[0].path == CHAT


async def test_the_api_key_never_appears_in_an_error(fake: FakeOpenAI) -> None:
    fake.script(CHAT, ErrorReply(401, "Incorrect API key provided: {api_key}.", type="invalid_request_error"),
                ErrorReply(400, "Cannot parse request from key {api_key}", type="invalid_request_error"))
    llm = OpenAILLM(settings(fake, max_retries=0))
    with pytest.raises(ProviderError, match="refused the API key.*api_key") as refused:
        await reply(llm)
    with pytest.raises(ProviderError, match="HTTP 400: Cannot parse request") as bad:
        await reply(llm)
    for error in (refused, bad):
        assert KEY not in str(error.value) and KEY not in repr(error.value.args)
    assert KEY in fake.requests[0].headers["authorization"]  # it was sent, and echoed back


async def test_an_unreachable_server_names_the_url_to_fix() -> None:
    with trio.socket.socket() as unused:  # a port that nothing listens on
        await unused.bind(("127.0.0.1", 0))
        url = "http://127.0.0.1:%d/v1" % unused.getsockname()[1]
    with pytest.raises(ProviderError, match=r"cannot be reached .*: check \[openai\] base_url"):
        await reply(OpenAILLM(OpenAISettings(api_key=KEY, base_url=url, max_retries=0)))


async def test_the_fake_refuses_a_malformed_request(fake: FakeOpenAI) -> None:
    # The fake checks bodies against the openai package's types, so it catches a
    # provider that sends the wrong shape; here, a message role the API does not know.
    with pytest.raises(ProviderError, match="HTTP 400: fake: .*role"):
        await reply(OpenAILLM(settings(fake)), [{"role": "narrator", "content": "Once upon a time"}])
    assert fake.requests[0].invalid


async def test_a_consumer_cancelled_between_events_closes_the_connection(fake: FakeOpenAI) -> None:
    fake.script(CHAT, ChatStream.of(*["word "] * 50, pause=0.02))
    with trio.CancelScope() as scope:
        async with aclosing(OpenAILLM(settings(fake)).chat(HELLO)) as events:
            async for _ in events:
                scope.cancel()
                await trio.sleep(1)  # speaking the delta when the barge-in comes: closed while cancelled
    await fake.requests[0].finished.wait()
    assert fake.requests[0].disconnected and not fake.requests[0].completed
