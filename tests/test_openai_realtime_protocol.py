"""The sans-IO OpenAI Realtime protocol with plain dicts: both dialects, both wire formats,
tool output, truncate, errors. Every client event is checked against the openai models."""

from __future__ import annotations

import base64

import pytest

from media.codecs import PCMU
from providers.base import (
    AgentAudio,
    CallerSpeechStarted,
    CallerSpeechStopped,
    ProviderError,
    ResponseDone,
    SpokenText,
    ToolCall,
    ToolSpec,
    Transcript,
)
from providers.openai.realtime_protocol import (
    RealtimeProtocol,
    SessionOptions,
    TranscriptionProtocol,
    WireAudio,
)
from tests.fakes.openai_realtime import GA_CLIENT, PREVIEW_CLIENT, strict
from tests.speech import tone

WEATHER = ToolSpec("weather", "The weather in a city",
                   {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
PREVIEW_MODEL = "gpt-4o-realtime-preview"


MULAW = PCMU.transcoder()


def protocol(rate: int = 8000, tools: tuple[ToolSpec, ...] = (), **options) -> RealtimeProtocol:
    return RealtimeProtocol(SessionOptions(**options), "Be brief.", tools, rate)


def sent(proto: RealtimeProtocol, events: list[dict]) -> list[dict]:
    """``events``, each validated as the dialect's client event."""
    for event in events:
        strict(PREVIEW_CLIENT if proto.preview else GA_CLIENT, event)
    return events


def audio_delta(item_id: str, wire: bytes, kind: str = "response.output_audio.delta") -> dict:
    return {"type": kind, "event_id": "e", "response_id": "r", "item_id": item_id, "output_index": 0,
            "content_index": 0, "delta": base64.b64encode(wire).decode()}


def test_ga_session_update_for_an_8khz_call():
    proto = protocol(8000, (WEATHER,), voice="marin", max_output_tokens=300, turn_detection="semantic_vad")
    [update] = sent(proto, proto.session_update())
    session = update["session"]
    assert session["type"] == "realtime"
    assert session["instructions"] == "Be brief."
    assert session["max_output_tokens"] == 300
    assert session["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert session["audio"]["output"] == {"format": {"type": "audio/pcmu"}, "voice": "marin"}
    assert session["audio"]["input"]["turn_detection"] == {"type": "semantic_vad"}
    assert session["audio"]["input"]["transcription"] == {"model": "gpt-4o-mini-transcribe"}
    assert session["tools"] == [{"type": "function", "name": "weather", "description": "The weather in a city",
                                 "parameters": dict(WEATHER.parameters)}]


def test_ga_session_for_a_wideband_call_is_pcm_at_24khz_and_none_turns_detection_off():
    proto = protocol(16000, turn_detection="none", input_transcription="")
    [update] = sent(proto, proto.session_update())
    audio_in = update["session"]["audio"]["input"]
    assert audio_in == {"format": {"type": "audio/pcm", "rate": 24000}, "turn_detection": None}


def test_preview_session_update_is_flat_and_carries_temperature():
    proto = protocol(8000, (WEATHER,), model=PREVIEW_MODEL, temperature=0.7, max_output_tokens=200)
    assert proto.preview
    [update] = sent(proto, proto.session_update())
    session = update["session"]
    assert "type" not in session
    assert session["input_audio_format"] == session["output_audio_format"] == "g711_ulaw"
    assert session["temperature"] == 0.7
    assert session["max_response_output_tokens"] == 200
    assert session["voice"] == "alloy"
    assert session["turn_detection"] == {"type": "server_vad"}
    assert session["input_audio_transcription"] == {"model": "gpt-4o-mini-transcribe"}
    assert session["tools"][0]["name"] == "weather"
    wideband = protocol(16000, model=PREVIEW_MODEL).session_update()[0]["session"]
    assert wideband["input_audio_format"] == "pcm16"


def test_options_are_checked_when_built():
    with pytest.raises(ProviderError, match="turn_detection"):
        SessionOptions(turn_detection="push_to_talk")
    with pytest.raises(ProviderError, match="temperature"):
        SessionOptions(model="gpt-realtime", temperature=0.8)
    with pytest.raises(ProviderError, match="max_output_tokens"):
        SessionOptions(max_output_tokens=0)


def test_8khz_audio_goes_as_mulaw_byte_for_byte_both_ways():
    proto = protocol(8000)
    pcm = tone(100, 8000)
    [append] = sent(proto, proto.append_audio(pcm))
    assert base64.b64decode(append["audio"]) == MULAW.encode(pcm)
    wire = MULAW.encode(tone(60, 8000, hz=300))
    [audio] = proto.receive(audio_delta("item_1", wire))
    assert audio == AgentAudio(MULAW.decode(wire), "item_1")


def test_16khz_audio_is_resampled_to_24khz_and_back_with_the_right_length():
    proto = protocol(16000)
    pcm = tone(500, 16000)
    wire = b"".join(base64.b64decode(e["audio"]) for e in sent(proto, proto.append_audio(pcm) + proto.commit())
                    if e["type"] == "input_audio_buffer.append")
    assert abs(len(wire) // 2 - 24000 // 2) <= 2  # 500 ms at 24 kHz, to a sample or two
    reply = tone(600, 24000)
    events = []
    for start in range(0, len(reply), 4800):
        events += proto.receive(audio_delta("item_1", reply[start:start + 4800]))
    events += proto.receive({"type": "response.done", "event_id": "e", "response": {"status": "completed"}})
    assert isinstance(events[-1], ResponseDone)
    pcm_out = b"".join(e.pcm for e in events if isinstance(e, AgentAudio))
    assert {e.item_id for e in events if isinstance(e, AgentAudio)} == {"item_1"}
    assert abs(len(pcm_out) // 2 - 16000 * 600 // 1000) <= 2  # the flush released the tail


def test_a_reply_tail_is_released_at_response_done_not_held_for_the_next_reply():
    audio = WireAudio(16000)
    first = audio.decode(tone(200, 24000))
    tail = audio.end_reply()
    assert len(first) + len(tail) == pytest.approx(16000 * 0.2 * 2, abs=4)
    assert tail  # the filter did hold some: without end_reply it would be lost


def test_ga_server_events_become_trivox_events_in_order():
    proto = protocol(8000)
    wire = MULAW.encode(tone(40, 8000))
    script = [
        {"type": "session.updated", "event_id": "e", "session": {"type": "realtime"}},
        {"type": "input_audio_buffer.speech_started", "event_id": "e", "item_id": "u1", "audio_start_ms": 0},
        {"type": "input_audio_buffer.speech_stopped", "event_id": "e", "item_id": "u1", "audio_end_ms": 900},
        {"type": "conversation.item.input_audio_transcription.delta", "event_id": "e", "item_id": "u1",
         "delta": "Hello"},
        {"type": "conversation.item.input_audio_transcription.delta", "event_id": "e", "item_id": "u1",
         "delta": " there"},
        {"type": "conversation.item.input_audio_transcription.completed", "event_id": "e", "item_id": "u1",
         "content_index": 0, "transcript": "Hello there"},
        {"type": "response.created", "event_id": "e", "response": {"id": "r"}},
        audio_delta("a1", wire),
        {"type": "response.output_audio_transcript.delta", "event_id": "e", "item_id": "a1", "delta": "Hi"},
        {"type": "response.output_audio_transcript.done", "event_id": "e", "item_id": "a1", "transcript": "Hi!"},
        {"type": "response.done", "event_id": "e", "response": {"status": "completed"}},
    ]
    events = [event for server_event in script for event in proto.receive(server_event)]
    assert events == [
        CallerSpeechStarted(), CallerSpeechStopped(),
        SpokenText("user", "Hello", final=False), SpokenText("user", "Hello there", final=False),
        SpokenText("user", "Hello there", final=True),
        AgentAudio(MULAW.decode(wire), "a1"),
        SpokenText("assistant", "Hi", final=False), SpokenText("assistant", "Hi!", final=True),
        ResponseDone(),
    ]
    assert proto.current_item_id == "a1"  # still playing after response.done


def test_preview_names_the_audio_events_differently():
    proto = protocol(8000, model=PREVIEW_MODEL)
    wire = MULAW.encode(tone(20, 8000))
    assert proto.receive(audio_delta("a1", wire, "response.output_audio.delta")) == []
    [audio] = proto.receive(audio_delta("a1", wire, "response.audio.delta"))
    assert audio.item_id == "a1" and proto.current_item_id == "a1"
    [text] = proto.receive({"type": "response.audio_transcript.done", "item_id": "a1", "transcript": "Hi"})
    assert text == SpokenText("assistant", "Hi", final=True)


def test_a_function_call_is_one_tool_call_when_its_item_is_done_and_its_output_goes_back():
    proto = protocol(8000, (WEATHER,))
    assert proto.receive({"type": "response.function_call_arguments.delta", "item_id": "f1", "call_id": "c1",
                          "delta": '{"city":'}) == []
    assert proto.receive({"type": "response.function_call_arguments.done", "item_id": "f1", "call_id": "c1",
                          "name": "weather", "arguments": '{"city": "Oslo"}'}) == []
    item = {"id": "f1", "type": "function_call", "call_id": "c1", "name": "weather", "arguments": '{"city": "Oslo"}'}
    assert proto.receive({"type": "response.output_item.done", "item": item}) == [
        ToolCall("c1", "weather", '{"city": "Oslo"}')]
    create, respond = sent(proto, proto.tool_output("c1", '{"temp_c": 21}'))
    assert create == {"type": "conversation.item.create",
                      "item": {"type": "function_call_output", "call_id": "c1", "output": '{"temp_c": 21}'}}
    assert respond == {"type": "response.create"}


def test_respond_with_instructions_and_manual_turns_commit_first():
    proto = protocol(8000)
    assert sent(proto, proto.respond("Greet the caller.")) == [
        {"type": "response.create", "response": {"instructions": "Greet the caller."}}]
    proto.append_audio(tone(200, 8000))
    assert [e["type"] for e in proto.respond()] == ["response.create"]  # server VAD commits itself

    manual = protocol(8000, turn_detection="none")
    assert [e["type"] for e in manual.respond()] == ["response.create"]  # nothing to commit
    manual.append_audio(tone(200, 8000))
    assert [e["type"] for e in sent(manual, manual.respond())] == ["input_audio_buffer.commit", "response.create"]
    assert [e["type"] for e in manual.respond()] == ["response.create"]


def test_truncate_is_clamped_to_the_audio_received_and_drops_what_still_arrives():
    proto = protocol(8000)
    proto.receive({"type": "response.created", "response": {"id": "r"}})
    proto.receive(audio_delta("a1", bytes(8 * 300)))  # 300 ms of mu-law
    cancel, truncate = sent(proto, proto.truncate("a1", 1200))
    assert cancel == {"type": "response.cancel"}
    assert truncate["type"] == "conversation.item.truncate"
    assert (truncate["item_id"], truncate["content_index"], truncate["audio_end_ms"]) == ("a1", 0, 300)
    assert proto.receive(audio_delta("a1", bytes(160))) == []  # in flight: never played
    assert proto.receive({"type": "response.done", "response": {"status": "cancelled"}}) == [ResponseDone()]
    [again] = sent(proto, proto.truncate("a1", 120))  # no response running: no cancel
    assert again["audio_end_ms"] == 120 and again["event_id"] != truncate["event_id"]


def test_errors_a_session_survives_are_dropped_and_others_raise_with_the_service_message():
    proto = protocol(8000)
    [truncate] = proto.truncate("a9", 5000)
    survivable = [
        {"type": "invalid_request_error", "code": "invalid_value", "event_id": truncate["event_id"],
         "message": "Audio content of 4000ms is already shorter than 5000ms"},
        {"type": "invalid_request_error", "code": "response_cancel_not_active", "message": "no active response"},
        {"type": "invalid_request_error", "code": "input_audio_buffer_commit_empty", "message": "buffer too small"},
        {"type": "invalid_request_error", "code": "conversation_already_has_active_response",
         "message": "Conversation already has an active response"},
    ]
    for error in survivable:
        assert proto.receive({"type": "error", "event_id": "e", "error": error}) == []
    fatal = {"type": "invalid_request_error", "code": "unknown_parameter",
             "message": "Unknown parameter: 'session.bogus'."}
    with pytest.raises(ProviderError, match=r"Unknown parameter: 'session.bogus'. \(unknown_parameter\)"):
        proto.receive({"type": "error", "event_id": "e", "error": fatal})


def test_a_failed_response_raises_with_its_reason():
    proto = protocol(8000)
    done = {"type": "response.done", "response": {"status": "failed", "status_details": {
        "type": "failed", "error": {"type": "invalid_request_error", "code": "insufficient_quota",
                                    "message": "You exceeded your current quota"}}}}
    with pytest.raises(ProviderError, match="exceeded your current quota"):
        proto.receive(done)
    cancelled = {"type": "response.done", "response": {"status": "cancelled"}}
    assert proto.receive(cancelled) == [ResponseDone()]


def test_transcription_session_interim_then_final():
    proto = TranscriptionProtocol("gpt-4o-mini-transcribe", "en", 8000)
    [update] = proto.session_update()
    strict(GA_CLIENT, update)
    assert update["session"] == {"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcmu"}, "turn_detection": None,
        "transcription": {"model": "gpt-4o-mini-transcribe", "language": "en"}}}}
    [append] = proto.append_audio(tone(100, 8000))
    strict(GA_CLIENT, append)
    assert [e["type"] for e in proto.commit()] == ["input_audio_buffer.commit"]
    assert proto.receive({"type": "input_audio_buffer.committed", "item_id": "u1"}) is None
    delta = "conversation.item.input_audio_transcription.delta"
    assert proto.receive({"type": delta, "item_id": "u1", "delta": "Book"}) == Transcript("Book", final=False)
    assert proto.receive({"type": delta, "item_id": "u1", "delta": " a table"}) == Transcript("Book a table", False)
    assert proto.receive({"type": "conversation.item.input_audio_transcription.completed", "item_id": "u1",
                          "transcript": "Book a table."}) == Transcript("Book a table.", final=True)


def test_transcription_of_too_little_audio_is_empty_and_other_failures_raise():
    proto = TranscriptionProtocol("gpt-4o-mini-transcribe", "", 16000)
    assert "language" not in proto.session_update()[0]["session"]["audio"]["input"]["transcription"]
    empty = {"type": "error", "error": {"type": "invalid_request_error", "code": "input_audio_buffer_commit_empty",
                                        "message": "buffer too small"}}
    assert proto.receive(empty) == Transcript("", final=True)
    failed = {"type": "conversation.item.input_audio_transcription.failed", "item_id": "u1", "content_index": 0,
              "error": {"type": "transcription_error", "code": "audio_unintelligible", "message": "Audio unclear"}}
    with pytest.raises(ProviderError, match="Audio unclear"):
        proto.receive(failed)
