"""A real SIP call from sipp to `trivox serve`, with real RTP, on loopback.

sipp is the SIP user agent (INVITE, ACK, BYE); this test plays the caller's handset on
the RTP port sipp's SDP offers: it hears the greeting, speaks a sentence made with
eSpeak NG, and hears the echo come back.
"""

from __future__ import annotations

import random
import re
import shutil
import socket
from pathlib import Path

import pytest
import trio

from tests.phone import SPEECH_RMS, rms, rtp_packet, rtp_payload, transcript_events, ulaw_decode, ulaw_encode
from tests.speech import speak

SCENARIOS = Path(__file__).with_name("sipp")
#: How long sipp stays on the line before its BYE: greeting + utterance + reply, with room.
CALL_MS = 16000
FRAME = 160  # 20 ms of 8 kHz mu-law
GAP = 0.5  # seconds without agent packets that end a talkspurt (we send nothing in silences)


def sipp_command(target: tuple[str, int], scenario: str, rtp_port: int) -> list[str]:
    host, port = target
    return [
        "sipp", f"{host}:{port}", "-sf", str(SCENARIOS / scenario), "-m", "1", "-l", "1",
        "-i", "127.0.0.1", "-p", str(free_udp_port()), "-mi", "127.0.0.1",
        "-key", "rtpport", str(rtp_port), "-d", str(CALL_MS),
        "-timeout", "60s", "-timeout_error", "-nostdin", "-trace_err",
    ]


async def run_sipp(target: tuple[str, int], scenario: str, cwd: Path, rtp_port: int | None = None,
                   extra: tuple[str, ...] = ()) -> None:
    """Run a scenario to its end; sipp exits 0 only if every step of it went as written."""
    command = [*sipp_command(target, scenario, rtp_port or free_udp_port()), *extra]
    sipp = await trio.run_process(command, check=False,
                                  cwd=cwd, capture_stdout=True, capture_stderr=True)
    assert sipp.returncode == 0, (sipp.stdout or b"").decode(errors="replace")[-3000:]


async def start_sipp(nursery: trio.Nursery, command: list[str], cwd: Path) -> trio.Process:
    """sipp running ``command`` in the background of ``nursery``; see :func:`sipp_exited`."""
    return await nursery.start(lambda task_status: trio.run_process(
        command, check=False, cwd=cwd, capture_stdout=True, capture_stderr=True, task_status=task_status))


async def sipp_exited(sipp: trio.Process, timeout: float) -> None:
    """Wait for sipp's scenario to end; it exits 0 only if every step went as written."""
    with trio.fail_after(timeout):
        while sipp.returncode is None:
            await trio.sleep(0.1)
    assert sipp.returncode == 0, (sipp.stdout or b"").decode(errors="replace")[-3000:]


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Handset:
    """The caller's RTP end: sends 20 ms PCMU frames on a steady clock, records what arrives."""

    def __init__(self, sock: trio.socket.SocketType) -> None:
        self.sock = sock
        self.peer: tuple[str, int] | None = None
        self.received: list[tuple[float, int, int, bool, bytes]] = []  # time, ts, seq, marker, pcm
        self.energy: list[float] = []  # RMS of each received packet
        self.queue: list[bytes] = []
        self.last_speech_sent: float | None = None
        self.peer_known = trio.Event()

    async def receive(self) -> None:
        while True:
            data, source = await self.sock.recvfrom(2048)
            pt, seq, marker, payload = rtp_payload(data)
            assert pt == 0, f"expected PCMU, got payload type {pt}"
            timestamp = int.from_bytes(data[4:8], "big")
            pcm = ulaw_decode(payload)
            self.received.append((trio.current_time(), timestamp, seq, marker, pcm))
            self.energy.append(rms(pcm))
            if self.peer is None:
                self.peer = source[:2]
                self.peer_known.set()

    async def send(self) -> None:
        await self.peer_known.wait()
        ssrc, seq, ts = random.getrandbits(32), random.getrandbits(16), random.getrandbits(32)
        start = trio.current_time()
        tick = 0
        while True:
            frame = self.queue.pop(0) if self.queue else bytes(FRAME * 2)
            if rms(frame) > SPEECH_RMS:
                self.last_speech_sent = trio.current_time()
            await self.sock.sendto(rtp_packet(seq + tick, ts + tick * FRAME, ssrc, ulaw_encode(frame)), self.peer)
            tick += 1
            await trio.sleep_until(start + tick * 0.020)

    def say(self, pcm: bytes) -> None:
        pcm += bytes(-len(pcm) % (FRAME * 2))
        self.queue += [pcm[i:i + FRAME * 2] for i in range(0, len(pcm), FRAME * 2)]

    def talkspurts(self) -> list[list[tuple[float, int, int, bool, bytes]]]:
        """Agent packets split where nothing arrived for GAP seconds."""
        spurts: list[list] = []
        for packet in self.received:
            if not spurts or packet[0] - spurts[-1][-1][0] > GAP:
                spurts.append([])
            spurts[-1].append(packet)
        return spurts

    async def wait_for_speech(self, after: float, timeout: float) -> float:
        """Time of the first agent packet with speech energy after ``after``."""
        with trio.fail_after(timeout):
            while True:
                for (when, *_), energy in zip(self.received, self.energy):
                    if when > after and energy > SPEECH_RMS:
                        return when
                await trio.sleep(0.01)

    async def wait_for_quiet(self, timeout: float) -> None:
        with trio.fail_after(timeout):
            while not self.received or trio.current_time() - self.received[-1][0] < GAP:
                await trio.sleep(0.05)


async def test_sipp_call_hears_greeting_and_echo(trivox, tmp_path):
    assert shutil.which("sipp"), "sipp is missing: apt-get install sip-tester (README, .ci/run)"
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))
    handset = Handset(sock)
    command = sipp_command(trivox.sip, "uac_call.xml", sock.getsockname()[1])
    utterance = speak("hello world", 8000)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(handset.receive)
        nursery.start_soon(handset.send)
        sipp = await start_sipp(nursery, command, tmp_path)

        greeting_at = await handset.wait_for_speech(0.0, timeout=30)
        await handset.wait_for_quiet(timeout=30)
        handset.say(utterance + bytes(8000 * 2))  # the sentence, then a second of silence
        with trio.fail_after(10):
            while handset.last_speech_sent is None or handset.queue:
                await trio.sleep(0.02)
        spoken_end = handset.last_speech_sent
        reply_at = await handset.wait_for_speech(spoken_end, timeout=20)
        await handset.wait_for_quiet(timeout=30)
        print(f"\nend of caller speech -> first reply packet: {(reply_at - spoken_end) * 1000:.0f} ms")

        await sipp_exited(sipp, CALL_MS / 1000 + 30)
        nursery.cancel_scope.cancel()

    greeting, reply = handset.talkspurts()[:2]
    assert greeting[0][0] <= greeting_at < greeting[-1][0] < reply_at
    for spurt in (greeting, reply):
        # RTP headers: marker on the first packet of each talkspurt only, sequence
        # numbers consecutive, timestamps 160 apart (20 ms at 8 kHz).
        assert [p[3] for p in spurt] == [True] + [False] * (len(spurt) - 1)
        assert all((b[2] - a[2]) % 65536 == 1 for a, b in zip(spurt, spurt[1:]))
        assert all((b[1] - a[1]) % 2**32 == FRAME for a, b in zip(spurt, spurt[1:]))
        assert sum(rms(p[4]) > SPEECH_RMS for p in spurt) * 0.02 > 0.5  # over half a second of speech
    # across the silence the timestamp kept counting: the gap in ts matches the gap in time
    silence_ts = (reply[0][1] - greeting[-1][1]) % 2**32
    assert silence_ts > (reply[0][0] - greeting[-1][0]) * 8000 * 0.5

    trivox.wait_for_log(r"call ended after .*: the caller hung up")  # the BYE reached the call
    events = transcript_events(trivox.transcripts)
    kinds = [e["kind"] for e in events]
    assert kinds[:2] == ["start", "answered"] and kinds[-1] == "end"
    caller = [e["text"] for e in events if e["kind"] == "caller"]
    agent = [e["text"] for e in events if e["kind"] == "agent"]
    assert caller and caller[0], events
    assert f"You said: {caller[0]}" in agent
    assert events[-1]["reason"] == "the caller hung up"
    call_id = events[0]["call"]
    trivox.wait_for_log(rf"\[{re.escape(call_id)}\] trivox.calls: call started")
    assert re.search(rf"\[{re.escape(call_id)}\] trivox.calls: call ended after .*: the caller hung up", trivox.log())


async def test_ctrl_c_hangs_up_the_call_with_bye(trivox, tmp_path):
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))
    handset = Handset(sock)
    command = sipp_command(trivox.sip, "uac_trivox_hangs_up.xml", sock.getsockname()[1])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(handset.receive)
        sipp = await start_sipp(nursery, command, tmp_path)
        await handset.wait_for_speech(0.0, timeout=30)  # the call is up: the greeting plays
        assert await trio.to_thread.run_sync(trivox.stop) == 0  # Ctrl-C
        # sipp gets our BYE (its scenario waits for it and answers 200) and ends cleanly
        await sipp_exited(sipp, 30)
        nursery.cancel_scope.cancel()
    events = transcript_events(trivox.transcripts)
    assert events[-1]["kind"] == "end" and events[-1]["reason"] == "server shutting down"
    assert "SIGINT: hanging up 1 call(s)" in trivox.log()


@pytest.mark.parametrize("scenario", ["uac_hold.xml", "uac_hold_rfc2543.xml"])
async def test_hold_and_resume_by_reinvite(trivox, tmp_path, scenario):
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))
    handset = Handset(sock)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(handset.receive)
        # sipp checks the answers: a=recvonly to a sendonly offer, a=sendrecv to a resume
        await run_sipp(trivox.sip, scenario, tmp_path, sock.getsockname()[1])
        nursery.cancel_scope.cancel()
    trivox.wait_for_log(r"call .* put on hold")
    trivox.wait_for_log(r"call .* taken off hold")
    trivox.wait_for_log(r"call ended after .*: the caller hung up")
    assert "call failed" not in trivox.log()


async def call_with_dialog(tmp_path: Path, dialog: str, scenario: str, ending: str) -> list[dict]:
    """Run ``scenario`` against a trivox running ``dialog``; wait for the call to end with
    ``ending`` in the log, and return the call's transcript events."""
    from tests.conftest import start_trivox

    server = start_trivox(tmp_path, dialog=dialog)
    try:
        await run_sipp(server.sip, scenario, tmp_path)
        server.wait_for_log(rf"call ended after .*: {ending}")
        return transcript_events(server.transcripts)
    finally:
        server.stop()


async def test_blind_transfer_with_refer(tmp_path):
    # sipp sees the REFER to sip:200@127.0.0.1, reports success, and gets our BYE
    events = await call_with_dialog(tmp_path, "transfer_to_200", "uac_transfer.xml", "trivox hung up")
    assert [e["target"] for e in events if e["kind"] == "transfer"] == ["sip:200@127.0.0.1"]
    assert not [e for e in events if e["kind"] == "transfer-failed"]


async def test_info_dtmf_reaches_the_dialog(tmp_path):
    # sipp's INFOs get 200s, and the dialog reads the digits back and hangs up (BYE)
    events = await call_with_dialog(tmp_path, "read_back_digits", "uac_info_dtmf.xml", "trivox hung up")
    assert [e["digits"] for e in events if e["kind"] == "dtmf"] == ["427"]


async def test_rfc4733_dtmf_reaches_the_dialog(tmp_path):
    # sipp plays its telephone-event captures for 4, 2 and 7 into the call's RTP
    events = await call_with_dialog(tmp_path, "read_back_digits", "uac_rfc4733.xml", "trivox hung up")
    assert [e["digits"] for e in events if e["kind"] == "dtmf"] == ["427"]


async def test_cancel_before_the_answer(tmp_path):
    # sipp checks 200 for the CANCEL, then 487 for the INVITE, and that nothing follows its ACK
    events = await call_with_dialog(tmp_path, "answer_after_a_second", "uac_cancel.xml", "cancelled by the caller")
    assert [e["kind"] for e in events] == ["start", "end"]  # never answered
    assert events[-1]["reason"] == "cancelled by the caller"


async def test_retransmitted_invite_and_lost_ack(tmp_path):
    from tests.conftest import start_trivox

    server = start_trivox(tmp_path, dialog="answer_after_a_second")
    try:
        await run_sipp(server.sip, "uac_retransmissions.xml", tmp_path, extra=("-trace_msg",))
        server.wait_for_log(r"call ended after .*: the caller hung up")
    finally:
        server.stop()
    # the retransmitted INVITE started no second call
    assert len(re.findall(r"trivox.calls: call started", server.log())) == 1
    # sipp's message log: the 200 came exactly twice: once lost (no ACK), once resent after
    # T1, and never after the ACK (the next resend would have been 1 s later, inside the
    # scenario's 2.5 s pause)
    trace = next(tmp_path.glob("uac_retransmissions_*_messages.log")).read_text()
    received = [m for m in trace.split("----------------------------------------------- ")
                if "message received" in m]
    oks = [m for m in received if "SIP/2.0 200 OK" in m and "CSeq: 1 INVITE" in m]
    assert len(oks) == 2, trace[-4000:]


async def test_codec_change_by_update_moves_our_rtp_to_pcma(trivox, tmp_path):
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))
    arrived: list[tuple[int, int]] = []  # (payload type, sequence) of trivox's packets

    async def receive() -> None:
        while True:
            data, _ = await sock.recvfrom(2048)
            arrived.append((data[1] & 0x7F, int.from_bytes(data[2:4], "big")))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        # sipp checks that the answer to its PCMA-only UPDATE takes PCMA
        await run_sipp(trivox.sip, "uac_codec_change.xml", tmp_path, sock.getsockname()[1])
        nursery.cancel_scope.cancel()
    types = [pt for pt, _ in arrived]
    assert 0 in types and 8 in types, types  # the greeting started as PCMU, went on as PCMA
    assert types == sorted(types)  # never back to PCMU once moved
    # the same stream: the sequence numbers run on across the change
    switch = types.index(8)
    assert (arrived[switch][1] - arrived[switch - 1][1]) % 65536 == 1
    trivox.wait_for_log(r"call .* moves from PCMU to PCMA")


async def test_delayed_offer_answered_in_the_ack(trivox, tmp_path):
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
    await sock.bind(("127.0.0.1", 0))
    types: list[int] = []

    async def receive() -> None:
        while True:
            data, _ = await sock.recvfrom(2048)
            types.append(data[1] & 0x7F)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        # sipp checks our offer in the 200 (PCMU, PCMA, telephone-event) and answers PCMA in its ACK
        await run_sipp(trivox.sip, "uac_late_offer.xml", tmp_path, sock.getsockname()[1])
        nursery.cancel_scope.cancel()
    assert types and set(types) == {8}, types  # the greeting came as PCMA, to the answer's port
    trivox.wait_for_log(r"the caller answered our offer with PCMA")
    trivox.wait_for_log(r"call ended after .*: the caller hung up")
