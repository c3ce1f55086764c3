"""End to end: a SIP call from sipp to `trivox serve` running the realtime dialog, whose
speech-to-speech model is the fake OpenAI Realtime server; real RTP both ways.

The caller's mu-law reaches the service unchanged (an 8 kHz call needs no conversion: the
session asks for audio/pcmu), and the agent's audio comes back on the wire.
"""

from __future__ import annotations

import trio

from tests.conftest import start_trivox
from tests.fakes.openai_realtime import FakeRealtime, Reply
from tests.phone import SPEECH_RMS, rms, transcript_events, ulaw_encode
from tests.speech import speak
from tests.test_sipp_call import Handset, sipp_command, sipp_exited, start_sipp

CALL_MS = 9000


async def test_a_sip_call_talks_to_the_realtime_model(tmp_path):
    fake = FakeRealtime()
    fake.caller_turn_ms = 3000  # the greeting's silence (1.5 s) and most of the utterance
    fake.caller_transcript = "what time do you open"
    fake.replies.extend([Reply(audio_ms=1000, transcript="Hello from the realtime fake."),
                         Reply(audio_ms=1600, transcript="We open at nine.")])
    fake.api_key = "sk-test-realtime"
    utterance = speak("what time do you open tomorrow", 8000)
    async with trio.open_nursery() as nursery:
        base_url = await nursery.start(fake.serve)
        config = ('[dialog]\nhandler = "realtime"\n'
                  '[sts]\ntype = "openai"\ninstructions = "You answer for a bakery."\n'
                  f'[openai]\nbase_url = "{base_url}"\napi_key = "${{REALTIME_TEST_KEY}}"\n')
        server = await trio.to_thread.run_sync(
            lambda: start_trivox(tmp_path, config, env={"REALTIME_TEST_KEY": "sk-test-realtime"}))
        try:
            sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
            await sock.bind(("127.0.0.1", 0))
            handset = Handset(sock)
            command = sipp_command(server.sip, "uac_call.xml", sock.getsockname()[1])
            command[command.index("-d") + 1] = str(CALL_MS)
            nursery.start_soon(handset.receive)
            nursery.start_soon(handset.send)
            sipp = await start_sipp(nursery, command, tmp_path)
            greeting_at = await handset.wait_for_speech(0.0, timeout=30)
            await handset.wait_for_quiet(timeout=10)
            handset.say(utterance + bytes(8000 * 2))
            reply_at = await handset.wait_for_speech(greeting_at + 1.5, timeout=20)
            await handset.wait_for_quiet(timeout=10)
            await sipp_exited(sipp, CALL_MS / 1000 + 30)
            server.wait_for_log(r"call ended after .*: the caller hung up")
        finally:
            log = server.log()
            await trio.to_thread.run_sync(server.stop)
        nursery.cancel_scope.cancel()

    conn = fake.last
    assert conn.pcmu and conn.session["instructions"] == "You answer for a bakery."
    # The caller's words reached the model as the very mu-law bytes the handset sent.
    sent = ulaw_encode(utterance[:8000])  # its first second, as the handset framed it
    assert sent[:4000] in bytes(conn.audio), "the caller's audio did not reach the service unchanged"
    # The agent's audio reached the caller: both replies, whole, in two talk-spurts.
    greeting, reply = handset.talkspurts()[:2]
    assert greeting[0][0] <= greeting_at < reply_at <= reply[0][0] + 0.1
    for spurt, ms in ((greeting, 1000), (reply, 1600)):
        spoken_ms = 20 * sum(rms(packet[4]) > SPEECH_RMS for packet in spurt)
        assert abs(spoken_ms - ms) <= 60, (spoken_ms, ms)
    events = transcript_events(server.transcripts)
    said = [(e["kind"], e["text"]) for e in events if e["kind"] in ("agent", "caller")]
    # (The fake's server VAD hears a turn in every 3 s of audio, the handset's silence
    # after the question included: later turns get empty replies.)
    assert said[:3] == [("agent", "Hello from the realtime fake."), ("caller", "what time do you open"),
                    ("agent", "We open at nine.")]
    assert "sk-test-realtime" not in log
