"""The caller's side of an end-to-end test: speech, energy, and reading transcripts.

Test clients pack RTP and AudioSocket frames by hand with struct, independently of the
trivox code under test.
"""

from __future__ import annotations

import json
import math
import struct
import uuid
import warnings
from pathlib import Path

import numpy as np
import trio

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

#: RMS (s16) above which a frame counts as speech; eSpeak speech peaks in the thousands.
SPEECH_RMS = 300


def rms(pcm: bytes) -> float:
    if len(pcm) < 2:
        return 0.0
    samples = np.frombuffer(pcm[: len(pcm) // 2 * 2], dtype="<i2").astype(np.float64)
    return math.sqrt(float(np.mean(samples**2)))


def rtp_packet(seq: int, timestamp: int, ssrc: int, payload: bytes, pt: int = 0, marker: bool = False) -> bytes:
    return struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF,
                       timestamp & 0xFFFFFFFF, ssrc) + payload


def rtp_payload(datagram: bytes) -> tuple[int, int, bool, bytes]:
    """(payload type, sequence, marker, payload) of a plain RTP packet."""
    first, second, seq = struct.unpack("!BBH", datagram[:4])
    assert first >> 6 == 2, "not RTP version 2"
    csrc = first & 0x0F
    return second & 0x7F, seq, bool(second & 0x80), datagram[12 + 4 * csrc:]


def ulaw_encode(pcm: bytes) -> bytes:
    return audioop.lin2ulaw(pcm, 2)


def ulaw_decode(payload: bytes) -> bytes:
    return audioop.ulaw2lin(payload, 2)


def transcript_events(folder: Path) -> list[dict]:
    events = []
    for path in sorted(folder.glob("*.jsonl")):
        events += [json.loads(line) for line in path.read_text().splitlines()]
    return events


# --- an AudioSocket client that behaves like Asterisk -------------------------------

PTIME = 0.030
GAP = 0.5


def frame(kind: int, payload: bytes = b"") -> bytes:
    return struct.pack("!BH", kind, len(payload)) + payload


#: Kinds of signed-linear audio by rate (res_audiosocket.h).
SLIN_KINDS = {8000: 0x10, 12000: 0x11, 16000: 0x12, 24000: 0x13, 32000: 0x14, 44100: 0x15, 48000: 0x16}
LAW_ENCODERS = {"ulaw": audioop.lin2ulaw, "alaw": audioop.lin2alaw}


class Asterisk:
    """One AudioSocket connection, as Asterisk's AudioSocket application drives it:
    a UUID frame, then one audio frame every packet time (30 ms, 480 bytes, to prove
    trivox assumes no frame size).

    ``rate`` plays the channel driver with ``c(slinNN)``: audio of that rate under its
    own kind. ``law`` plays ``c(ulaw)``/``c(alaw)``: raw G.711 in 20 ms frames (160
    bytes) under kind 0x10.
    """

    def __init__(self, stream: trio.SocketStream, call: uuid.UUID, *, rate: int = 8000,
                 law: str | None = None) -> None:
        self.stream = stream
        self.call = call
        self.rate = rate
        self.law = law
        self.kind = SLIN_KINDS[rate]
        self.ptime = 0.020 if law else PTIME
        self.chunk = round(rate * self.ptime) * (1 if law else 2)
        self.queue: list[tuple[bytes, bool]] = []  # (frame payload, is speech)
        self.received: list[tuple[float, bytes, float]] = []  # time, pcm, rms
        self.kinds: list[int] = []
        self.closed = trio.Event()
        self.last_speech_sent: float | None = None
        self._send_lock = trio.Lock()

    async def send_frame(self, data: bytes) -> None:
        async with self._send_lock:
            await self.stream.send_all(data)

    @classmethod
    async def connect(cls, address: tuple[str, int], **wire) -> "Asterisk":
        stream = await trio.open_tcp_stream(*address)
        call = uuid.uuid4()
        await stream.send_all(frame(0x01, call.bytes))
        return cls(stream, call, **wire)

    def encode(self, pcm: bytes) -> bytes:
        return LAW_ENCODERS[self.law](pcm, 2) if self.law else pcm

    async def read(self) -> None:
        buffer = b""
        while True:
            try:
                data = await self.stream.receive_some(65536)
            except trio.BrokenResourceError:
                # trivox closed while our last audio frames were still unread on its side:
                # the kernel then resets the connection instead of sending FIN
                data = b""
            if not data:
                self.closed.set()
                return
            buffer += data
            while len(buffer) >= 3:
                kind, length = struct.unpack("!BH", buffer[:3])
                if len(buffer) < 3 + length:
                    break
                payload, buffer = buffer[3:3 + length], buffer[3 + length:]
                self.kinds.append(kind)
                if kind in SLIN_KINDS.values():
                    self.received.append((trio.current_time(), payload, rms(payload)))

    async def send_audio(self) -> None:
        start = trio.current_time()
        tick = 0
        quiet = self.encode(bytes(self.chunk * (2 if self.law else 1)))
        while not self.closed.is_set():
            chunk, loud = self.queue.pop(0) if self.queue else (quiet, False)
            if loud:
                self.last_speech_sent = trio.current_time()
            try:
                await self.send_frame(frame(self.kind, chunk))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return
            tick += 1
            await trio.sleep_until(start + tick * self.ptime)

    def say(self, pcm: bytes) -> None:
        """Queue ``pcm`` (s16le at the client's rate) to be sent as the wire carries it."""
        size = self.chunk * (2 if self.law else 1)  # bytes of PCM per frame
        pcm += bytes(-len(pcm) % size)
        self.queue += [(self.encode(pcm[i:i + size]), rms(pcm[i:i + size]) > SPEECH_RMS)
                       for i in range(0, len(pcm), size)]

    async def say_all(self, pcm: bytes, timeout: float = 15) -> float:
        """Say ``pcm`` and a second of silence; returns when our last speech frame left."""
        self.say(pcm + bytes(self.rate * 2))
        with trio.fail_after(timeout):
            while self.last_speech_sent is None or self.queue:
                await trio.sleep(0.02)
        return self.last_speech_sent

    async def converse(self, utterance: bytes) -> tuple[float, float]:
        """Wait out the greeting, say ``utterance``, and wait for the agent's reply to
        start; returns (end of our speech, start of the reply)."""
        greeting = await self.wait_for_speech(0.0, timeout=30)
        await self.wait_for_quiet(greeting, timeout=30)
        spoken_end = await self.say_all(utterance)
        return spoken_end, await self.wait_for_speech(spoken_end, timeout=20)

    async def wait_for_speech(self, after: float, timeout: float) -> float:
        with trio.fail_after(timeout):
            while True:
                for when, _, energy in self.received:
                    if when > after and energy > SPEECH_RMS:
                        return when
                await trio.sleep(0.01)

    async def wait_for_quiet(self, after: float, timeout: float) -> None:
        """Until the agent has sent only silence for GAP seconds."""
        with trio.fail_after(timeout):
            while True:
                speech = [when for when, _, energy in self.received if when > after and energy > SPEECH_RMS]
                if speech and trio.current_time() - speech[-1] > GAP:
                    return
                await trio.sleep(0.05)

    def frame_gaps(self) -> float:
        """Largest gap between two frames from trivox: it must keep sending in silences."""
        times = [when for when, _, _ in self.received]
        return max(b - a for a, b in zip(times, times[1:]))
