"""The Call API in process, on a leg made of memory channels, with the real providers."""

from __future__ import annotations

import trio

from dialog.call import Call, CallServices
from dialog.heard import heard_prefix
from media.audio import frame_bytes
from media.pacer import Pacer
from providers.local import sphinx
from providers.registry import build_asr, build_tts
from tests.phone import SPEECH_RMS, rms
from tests.speech import speak

RATE = 8000
FRAME = frame_bytes(RATE)


class MemoryLeg:
    """A leg whose caller is the test: frames in through a channel, frames out to a list."""

    def __init__(self) -> None:
        self.call_id = "test-call"
        self.caller = "sip:test@127.0.0.1"
        self.sample_rate = RATE
        self.pacer = Pacer(RATE)
        self.end_reason = ""
        self.sent: list[bytes | None] = []
        self.hung_up = False
        self.caller_send, self.inbound = trio.open_memory_channel[bytes](1000)
        self.press, self.digits = trio.open_memory_channel[str](64)

    async def answer(self) -> None:
        pass

    async def hangup(self) -> None:
        self.hung_up = True

    async def sink(self, frame: bytes | None) -> None:
        self.sent.append(frame)

    async def talk(self, pcm: bytes, *, silence_after: float = 1.0) -> None:
        """Caller audio at real time, 20 ms a frame, then silence."""
        pcm += bytes(int(RATE * 2 * silence_after))
        pcm += bytes(-len(pcm) % FRAME)
        for i in range(0, len(pcm), FRAME):
            await self.caller_send.send(pcm[i:i + FRAME])
            await trio.sleep(0.02)


def services(tmp_path) -> CallServices:
    return CallServices(asr=build_asr("local", {}), tts=build_tts("local", {}),
                        transcripts_dir=str(tmp_path), listen_timeout=5.0)


async def test_listen_returns_what_the_caller_said_and_keeps_history(tmp_path):
    leg = MemoryLeg()
    utterance = speak("one two three", RATE)
    async with trio.open_nursery() as nursery:
        await nursery.start(leg.pacer.run, leg.sink)
        call = Call(leg, services(tmp_path), nursery)
        nursery.start_soon(call.run_ears)
        nursery.start_soon(leg.talk, bytes(RATE) + utterance)
        text = await call.listen(timeout=20)
        nursery.cancel_scope.cancel()
    assert text
    assert call.history == [{"role": "user", "content": text}]


async def test_listen_times_out_with_none(tmp_path):
    leg = MemoryLeg()
    async with trio.open_nursery() as nursery:
        call = Call(leg, services(tmp_path), nursery)
        nursery.start_soon(call.run_ears)
        nursery.start_soon(leg.talk, bytes(RATE))  # silence only
        assert await call.listen(timeout=1.5) is None
        nursery.cancel_scope.cancel()


async def test_barge_in_stops_the_agent_and_history_keeps_what_was_heard(tmp_path):
    leg = MemoryLeg()
    text = "This is a long announcement that the caller will not wait to hear to the end of it."
    interruption = speak("wait a moment please", RATE)
    async with trio.open_nursery() as nursery:
        await nursery.start(leg.pacer.run, leg.sink)
        call = Call(leg, services(tmp_path), nursery)
        nursery.start_soon(call.run_ears)

        async def interrupt() -> None:
            await trio.sleep(1.0)
            await leg.talk(interruption)

        nursery.start_soon(interrupt)
        finished = await call.say(text)
        stopped_at = len(leg.sent)
        await trio.sleep(0.5)
        nursery.cancel_scope.cancel()
    assert finished is False
    assistant = [h["content"] for h in call.history if h["role"] == "assistant"]
    assert len(assistant) == 1 and text.startswith(assistant[0]) and len(assistant[0]) < len(text)
    # after say() returned, the pacer sent no more agent speech
    assert all(frame is None or rms(frame) < SPEECH_RMS for frame in leg.sent[stopped_at:])
    full_frames = len(speak(text, RATE)) // FRAME
    assert sum(frame is not None for frame in leg.sent) < full_frames


async def test_say_without_interruption_returns_true_after_the_last_frame(tmp_path):
    leg = MemoryLeg()
    async with trio.open_nursery() as nursery:
        await nursery.start(leg.pacer.run, leg.sink)
        call = Call(leg, services(tmp_path), nursery)
        assert await call.say("Hello there.") is True
        played = [frame for frame in leg.sent if frame is not None]
        nursery.cancel_scope.cancel()
    assert leg.pacer.queued_ms == 0
    assert sum(rms(frame) > SPEECH_RMS for frame in played) > 10
    assert call.history == [{"role": "assistant", "content": "Hello there."}]


async def test_a_call_ended_mid_utterance_gives_its_recogniser_back(tmp_path):
    asr = build_asr("local", {})
    idle_before = len(sphinx._POOL._idle)
    leg = MemoryLeg()
    async with trio.open_nursery() as nursery:
        call = Call(leg, CallServices(asr=asr, tts=build_tts("local", {})), nursery)
        nursery.start_soon(call.run_ears)
        await leg.talk(speak("this call ends while I am still talking", RATE), silence_after=0.0)
        nursery.cancel_scope.cancel()  # the caller is mid-utterance: the VAD has not ended it
    assert len(sphinx._POOL._idle) == idle_before


def test_heard_prefix_cuts_at_a_word_boundary():
    assert heard_prefix("hello brave new world", 500, 1000) == "hello"  # "brav" is not a word heard
    assert heard_prefix("hello brave new world", 550, 1000) == "hello brave"
    assert heard_prefix("hello world", 0, 1000) == ""
    assert heard_prefix("hello world", 1000, 1000) == "hello world"
    assert heard_prefix("hello", 300, 1000) == ""


async def test_collect_digits_stops_at_count_terminator_or_silence(tmp_path):
    leg = MemoryLeg()
    async with trio.open_nursery() as nursery:
        call = Call(leg, services(tmp_path), nursery)
        for digit in "12#34567":  # pressed before the dialog asks: type-ahead is kept
            leg.press.send_nowait(digit)
        assert await call.collect_digits(count=5) == "12"  # the terminator ends it
        assert await call.collect_digits(count=3) == "345"  # the count ends it
        assert await call.collect_digits(count=4, timeout=0.3) == "67"  # silence ends it
        assert await call.collect_digits(timeout=0.1) == ""
        nursery.cancel_scope.cancel()
