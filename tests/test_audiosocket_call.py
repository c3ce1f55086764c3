"""AudioSocket calls against `trivox serve`, from a test client that behaves like Asterisk.

The client sends a UUID frame, then one audio frame every packet time (30 ms here, 480
bytes, to prove trivox assumes no frame size), like Asterisk's AudioSocket application.
"""

from __future__ import annotations

import uuid
import wave

import numpy as np
import pytest
import trio

from tests.conftest import start_trivox
from tests.phone import SPEECH_RMS, Asterisk, frame, transcript_events
from tests.speech import speak


async def test_call_greets_echoes_and_hangs_up_on_hangup_frame(trivox):
    utterance = speak("hello world", 8000)  # made before the call: the client must not stall
    client = await Asterisk.connect(trivox.audiosocket)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.read)
        nursery.start_soon(client.send_audio)
        greeting_at = await client.wait_for_speech(0.0, timeout=30)
        await client.wait_for_quiet(greeting_at, timeout=30)

        # a second connection that sends garbage is closed without disturbing this call
        intruder = await trio.open_tcp_stream(*trivox.audiosocket)
        await intruder.send_all(frame(0x01, uuid.uuid4().bytes) + b"\x42\x00\x02zz")
        with trio.fail_after(10):
            assert await intruder.receive_some(65536) == b""  # closed by trivox
        await intruder.aclose()

        spoken_end = await client.say_all(utterance)
        reply_at = await client.wait_for_speech(spoken_end, timeout=20)
        await client.wait_for_quiet(reply_at, timeout=30)
        await client.send_frame(frame(0x00))  # Asterisk: the caller hung up
        with trio.fail_after(10):
            await client.closed.wait()
        nursery.cancel_scope.cancel()
    print(f"\nend of caller speech -> first reply frame: {(reply_at - spoken_end) * 1000:.0f} ms")
    # A frame every 20 ms, silences included: Asterisk drops a call after about 2 s
    # without one. The bound leaves room for a loaded CI machine, not for a missing tick.
    assert client.frame_gaps() < 1.0
    assert {len(pcm) for _, pcm, _ in client.received} == {320}
    assert set(client.kinds) == {0x10}  # trivox sent audio only: the caller hung up, not us
    events = transcript_events(trivox.transcripts)
    mine = [e for e in events if e["call"] == str(client.call)]
    caller = [e["text"] for e in mine if e["kind"] == "caller"]
    assert caller and f"You said: {caller[0]}" in [e["text"] for e in mine if e["kind"] == "agent"]
    assert mine[-1]["kind"] == "end" and mine[-1]["reason"] == "the caller hung up"
    trivox.wait_for_log(r"malformed AudioSocket frame( from \S+)?, closing the connection")


async def test_caller_can_interrupt_the_agent(trivox):
    interruption = speak("stop please, I want to talk to you now", 8000)
    client = await Asterisk.connect(trivox.audiosocket)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.read)
        nursery.start_soon(client.send_audio)
        await client.wait_for_speech(0.0, timeout=30)
        await trio.sleep(0.5)  # the agent is mid-greeting
        interrupted_at = trio.current_time()
        spoken_end = await client.say_all(interruption)
        await client.wait_for_speech(spoken_end, timeout=20)  # the echo of what we said
        nursery.cancel_scope.cancel()
    speech = [when for when, _, energy in client.received if energy > SPEECH_RMS]
    # The agent fell silent soon after the caller started, and stayed silent while the
    # caller spoke: nothing from a second after the interruption to the end of our turn.
    assert not [when for when in speech if interrupted_at + 1.0 < when < spoken_end + 0.4]
    stopped = max(when for when in speech if when < interrupted_at + 1.0)
    print(f"\nagent stopped {(stopped - interrupted_at) * 1000:.0f} ms after the caller started talking")
    events = transcript_events(trivox.transcripts)
    agent = next(e for e in events if e["kind"] == "agent" and e["call"] == str(client.call))
    assert agent["interrupted"] is True
    # the history holds only what the caller heard: a strict prefix of the greeting
    assert agent["intended"].startswith(agent["text"]) and len(agent["text"]) < len(agent["intended"])


async def test_trivox_hangup_sends_hangup_frame_on_shutdown(trivox):
    client = await Asterisk.connect(trivox.audiosocket)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.read)
        nursery.start_soon(client.send_audio)
        await client.wait_for_speech(0.0, timeout=30)
        assert await trio.to_thread.run_sync(trivox.stop) == 0  # Ctrl-C
        with trio.fail_after(10):
            await client.closed.wait()
        nursery.cancel_scope.cancel()
    assert client.kinds[-1] == 0x00  # the hangup frame makes Asterisk hang up the caller
    events = transcript_events(trivox.transcripts)
    assert events[-1]["kind"] == "end" and events[-1]["reason"] == "server shutting down"
    assert "call ended" in trivox.log()


async def test_dtmf_frames_reach_the_dialog(tmp_path):
    server = start_trivox(tmp_path, dialog="read_back_digits")
    try:
        client = await Asterisk.connect(server.audiosocket)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.read)
            nursery.start_soon(client.send_audio)
            for digit in b"123":
                await client.send_frame(frame(0x03, bytes([digit])))
            await client.wait_for_speech(0.0, timeout=30)  # "You pressed 1 2 3."
            with trio.fail_after(30):
                await client.closed.wait()  # then the dialog hangs up
            nursery.cancel_scope.cancel()
        assert client.kinds[-1] == 0x00
        events = transcript_events(server.transcripts)
        assert [e["digits"] for e in events if e["kind"] == "dtmf"] == ["123"]
        assert any(e["kind"] == "agent" and e["text"] == "You pressed 1 2 3." for e in events)
    finally:
        server.stop()


@pytest.mark.parametrize("wire", [{"rate": 16000}, {"rate": 48000}, {"law": "ulaw"}, {"law": "alaw"}],
                         ids=["slin16", "slin48", "ulaw", "alaw"])
async def test_channel_driver_formats_are_served(trivox, wire):
    """Dial(AudioSocket/...c(...)): wideband kinds, and raw G.711 under kind 0x10."""
    client = await Asterisk.connect(trivox.audiosocket, **wire)
    utterance = speak("hello world", client.rate)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.read)
        nursery.start_soon(client.send_audio)
        _, reply_at = await client.converse(utterance)
        await client.wait_for_quiet(reply_at, timeout=30)
        await client.send_frame(frame(0x00))
        with trio.fail_after(10):
            await client.closed.wait()
        nursery.cancel_scope.cancel()
    # trivox answers in signed linear at the rate it hears, under that rate's kind, one
    # 20 ms frame per tick (G.711 is answered as slin 8 kHz: Asterisk reads kind 0x10 so).
    assert set(client.kinds) == {client.kind}
    assert {len(pcm) for _, pcm, _ in client.received} == {client.rate * 2 // 50}
    assert client.frame_gaps() < 1.0
    described = f"{wire.get('law', 'slin')}/{client.rate}"
    trivox.wait_for_log(rf"AudioSocket {client.call} from .* carries {described}; the call runs at "
                        rf"{16000 if client.rate >= 16000 else 8000} Hz")
    mine = [e for e in transcript_events(trivox.transcripts) if e["call"] == str(client.call)]
    caller = [e["text"] for e in mine if e["kind"] == "caller"]
    # The caller's turn was found and transcribed, and echoed back. (What pocketsphinx
    # makes of a cold first utterance varies; test_audiosocket_wire.py checks the
    # decoding and resampling sample by sample.)
    assert caller and f"You said: {caller[0]}" in [e["text"] for e in mine if e["kind"] == "agent"]


async def test_recording_ambience_and_comfort_noise_survive_a_killed_server(tmp_path):
    recordings = tmp_path / "recordings"
    ambience = tmp_path / "room.wav"
    with wave.open(str(ambience), "wb") as wav:
        wav.setnchannels(1), wav.setsampwidth(2), wav.setframerate(16000)
        n = np.arange(16000 * 2)
        wav.writeframes((np.sin(2 * np.pi * 3000 * n / 16000) * 3000).astype("<i2").tobytes())
    server = start_trivox(tmp_path, f'[audio]\nambience = "{ambience}"\nambience_level_db = -30.0\n'
                                    f'comfort_noise_dbfs = -60.0\nrecordings = "{recordings}"\n')
    try:
        client = await Asterisk.connect(server.audiosocket)
        utterance = speak("hello world", 8000)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.read)
            nursery.start_soon(client.send_audio)
            greeting_at = await client.wait_for_speech(0.0, timeout=30)
            await client.wait_for_quiet(greeting_at, timeout=30)
            await client.say_all(utterance)
            await trio.sleep(1.5)
            server.process.kill()  # SIGKILL mid-call: no chance to close the file
            with trio.fail_after(10):
                await client.closed.wait()
            nursery.cancel_scope.cancel()
    finally:
        server.stop()
    # What the caller heard between the agent's sentences is not digital silence: the
    # ambience (3 kHz at -30 dB of its file) with comfort noise under it.
    quiet = [pcm for when, pcm, energy in client.received if greeting_at + 1 < when and energy < SPEECH_RMS]
    assert quiet and all(any(pcm) for pcm in quiet[-20:])
    tail = np.frombuffer(b"".join(quiet[-20:]), dtype="<i2").astype(float)
    freqs = np.fft.rfftfreq(len(tail), 1 / 8000)
    assert abs(freqs[np.argmax(np.abs(np.fft.rfft(tail)))] - 3000) < 20
    # The recording is a valid WAV up to its last whole second before the kill.
    with wave.open(str(recordings / f"{client.call}.wav"), "rb") as wav:
        assert (wav.getnchannels(), wav.getframerate()) == (2, 8000)
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    left, right = frames[0::2].astype(float), frames[1::2].astype(float)
    seconds = len(left) / 8000
    assert seconds >= 3.0
    per_second = lambda x: [np.sqrt(np.mean(x[i:i + 8000] ** 2)) for i in range(0, len(x) - 7999, 8000)]  # noqa: E731
    assert max(per_second(right)) > SPEECH_RMS  # the greeting, on the agent's side
    assert max(per_second(left)) > SPEECH_RMS  # "hello world", on the caller's side
