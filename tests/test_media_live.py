"""The media plane on a live server: a wideband G.722 call, and DTMF sent by the dialog.

The caller here is written in the test: SIP over UDP with our own messages, RTP read off
its socket, G.722 decoded by the g722 package directly and RFC 4733 events unpacked with
struct, independently of trivox's media code.
"""

from __future__ import annotations

import random
import struct
import warnings
from collections import defaultdict

import numpy as np
import trio
from G722 import G722

from sipgw.sip.message import Response, parse_message, parse_name_addr
from tests.conftest import start_trivox
from tests.speech import speak
from tests.test_sip_transports import request

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

SDP_WIDEBAND = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                "m=audio {rtp} RTP/AVP 9 0 101\r\na=rtpmap:9 G722/8000\r\na=rtpmap:0 PCMU/8000\r\n"
                "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-16\r\na=ptime:20\r\n")
EVENT_DIGITS = "0123456789*#ABCD"


def band_share(pcm: np.ndarray, rate: int, low: float, high: float) -> float:
    """Share of the signal's energy between ``low`` and ``high`` Hz."""
    spectrum = np.abs(np.fft.rfft(pcm.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(pcm), 1 / rate)
    return float(spectrum[(freqs >= low) & (freqs < high)].sum() / spectrum.sum())


class Caller:
    """A SIP caller over UDP with its own RTP socket, both on loopback."""

    def __init__(self, server: tuple[str, int], call_id: str) -> None:
        self.server = server
        self.call_id = call_id
        self.sip = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        self.rtp = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        self.tag = ""

    async def call(self, sdp: str) -> Response:
        """INVITE with ``sdp`` (its {rtp} filled in), wait for the 200, ACK it."""
        await self.sip.bind(("127.0.0.1", 0))
        await self.rtp.bind(("127.0.0.1", 0))
        me = self.sip.getsockname()
        body = sdp.format(rtp=self.rtp.getsockname()[1])
        await self.sip.sendto(request("INVITE", "UDP", me, call_id=self.call_id, body=body), self.server)
        with trio.fail_after(20):
            while True:
                reply = parse_message((await self.sip.recvfrom(65536))[0])
                if isinstance(reply, Response) and reply.status == 200:
                    break
        self.tag = parse_name_addr(reply.headers.get("To")).tag
        ack = request("ACK", "UDP", me, call_id=self.call_id, to_tag=self.tag, branch="z9hG4bK-ack")
        await self.sip.sendto(ack, self.server)
        return reply

    async def bye(self) -> None:
        bye = request("BYE", "UDP", self.sip.getsockname(), cseq=2, call_id=self.call_id, to_tag=self.tag,
                      branch="z9hG4bK-bye")
        await self.sip.sendto(bye, self.server)

    def close(self) -> None:
        self.sip.close()
        self.rtp.close()


async def test_g722_call_carries_wideband_speech_and_the_dialog_presses_keys(tmp_path):
    server = start_trivox(tmp_path, '[sip]\ncodecs = ["G722", "PCMU"]\n', dialog="press_digits")
    caller = Caller(server.sip, "g722-1")
    sip, rtp = caller.sip, caller.rtp
    try:
        reply = await caller.call(SDP_WIDEBAND)
        answer = reply.body.decode()
        assert "m=audio" in answer and " RTP/AVP 9 101\r\n" in answer  # G.722 chosen over PCMU
        assert "a=rtpmap:9 G722/8000" in answer

        audio: list[bytes] = []
        events: dict[int, list[tuple[int, bool, int]]] = defaultdict(list)

        async def read_rtp() -> None:
            while True:
                data = (await rtp.recvfrom(2048))[0]
                pt = data[1] & 0x7F
                if pt == 9:
                    audio.append(data[12:])
                elif pt == 101:
                    event, flags, duration = struct.unpack("!BBH", data[12:16])
                    events[struct.unpack("!I", data[4:8])[0]].append((event, bool(flags & 0x80), duration))

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_rtp)
                while True:  # the dialog hangs up after speaking
                    bye = parse_message((await sip.recvfrom(65536))[0])
                    if getattr(bye, "method", None) == "BYE":
                        break
                ok = (f"SIP/2.0 200 OK\r\nVia: {bye.headers.get('Via')}\r\nFrom: {bye.headers.get('From')}\r\n"
                      f"To: {bye.headers.get('To')}\r\nCall-ID: g722-1\r\nCSeq: {bye.headers.get('CSeq')}\r\n"
                      "Content-Length: 0\r\n\r\n").encode()
                await sip.sendto(ok, server.sip)
                nursery.cancel_scope.cancel()
    finally:
        caller.close()
        server.stop()

    # Three key presses, in order, each one event: 100 ms (800 on the 8 kHz clock), with
    # the end packet three times.
    presses = [events[ts] for ts in sorted(events)]
    assert "".join(EVENT_DIGITS[press[0][0]] for press in presses) == "19#"
    for press in presses:
        assert [end for _, end, _ in press].count(True) == 3
        assert press[-1][2] == 800 and [d for _, _, d in press] == sorted(d for _, _, d in press)

    # The speech after them is G.722: 160 bytes per 20 ms, decoding to 16 kHz audio with
    # energy above 4 kHz, which no narrowband codec can carry.
    assert audio and {len(payload) for payload in audio} == {160}
    decoded = np.asarray(G722(16000, 64000).decode(b"".join(audio)), dtype=np.int16)
    assert len(decoded) == 320 * len(audio)
    speech = decoded[np.abs(decoded) > 0]
    assert len(speech) > 16000  # over a second of speech
    assert band_share(decoded, 16000, 4000, 7500) > 0.005


SDP_PCMU = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            "m=audio {rtp} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\n")


async def test_a_jittery_lossy_caller_is_reordered_concealed_and_counted(tmp_path):
    """10 s of caller audio, each packet delayed 0-80 ms at random (so often reordered)
    and one in twenty lost: the call's end-of-call line counts exactly those losses,
    nothing late once the buffer has grown, and a target delay that covers the jitter."""
    server = start_trivox(tmp_path)
    caller = Caller(server.sip, "jitter-1")
    rng = random.Random(4)
    count = 500
    lost = {i for i in range(20, count - 20) if rng.random() < 0.05}
    delays = [rng.uniform(0.0, 0.080) for _ in range(count)]
    pcm = speak("the quick brown fox jumps over the lazy dog. " * 4, 8000)
    payloads = [audioop.lin2ulaw(pcm[i * 320:(i + 1) * 320].ljust(320, b"\0"), 2) for i in range(count)]
    try:
        await caller.call(SDP_PCMU)
        remote = None

        async def send(i: int, at: float) -> None:
            await trio.sleep_until(at + delays[i])
            packet = struct.pack("!BBHII", 0x80, 0, 1000 + i, 160 * i, 0xCA11) + payloads[i]
            await caller.rtp.sendto(packet, remote)

        with trio.fail_after(10):  # trivox's greeting tells us where its RTP is
            remote = (await caller.rtp.recvfrom(2048))[1]
        async with trio.open_nursery() as nursery:
            start = trio.current_time()
            for i in range(count):
                if i not in lost:
                    nursery.start_soon(send, i, start + i * 0.020)
        await trio.sleep(0.5)
        await caller.bye()
        line = server.wait_for_log(r"media: received (\d+) packets, lost (\d+), late (\d+), concealed (\d+) "
                                   r"frames, jitter buffer ([\d-]+)/(\d+) ms")
    finally:
        caller.close()
        server.stop()
    received, lost_count, late, concealed, _, target = (int(g) for g in line.groups())
    assert received == count - len(lost)
    # A packet that comes after its time is lost to the caller as well as late.
    assert lost_count - late == len(lost)
    assert late <= 0.02 * count
    assert concealed >= len(lost)
    assert 60 <= target <= 140  # ~95% of 80 ms of spread, plus a frame
