"""What an AudioSocket connection's audio is on the wire, and the bridge to the call's rate.

The ``AudioSocket()`` dialplan application always sends signed linear 8 kHz (kind 0x10).
The channel driver, ``Dial(AudioSocket/host:port/uuid/c(slin16))``, sends the codec the
``c()`` option names: the higher signed-linear rates under their own kinds (0x11-0x18),
but G.711 (``c(ulaw)``, ``c(alaw)``) raw under kind 0x10, which claims signed linear. A
20 ms G.711 frame is 160 bytes where 20 ms of 8 kHz signed linear is 320, so the first
audio frame tells them apart. Which G.711 law it is, the bytes themselves tell: A-law
inverts every other bit of its codes and mu-law all of them, so codes of neighbouring
values decode, under the wrong law, to values scattered far apart. Audio decoded under
the right law is the smoother one (the smaller mean step between samples); digital
silence, smooth under both, is the quieter one under the right law.

Whatever arrives, Asterisk reads what we send as signed linear of the kind we label it
(res_audiosocket.c), so we answer in signed linear at the rate we receive.

A call runs at 8 or 16 kHz (the rates of the VAD); audio at other rates is resampled on
the way in and out by streaming soxr resamplers, one per direction. The outbound one
feeds a sample queue from which exactly one 20 ms wire frame leaves per tick, so the
resampler's block-wise output never reaches Asterisk as bursts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from media.audio import frame_bytes
from media.codecs import PCMA, PCMU
from media.resample import Resampler

#: Bytes in 20 ms of G.711 at 8 kHz: one byte a sample.
G711_FRAME = 160
#: Low latency matters more than a filter's last decibels on a phone line; at "LQ", soxr
#: holds back tens of milliseconds where "HQ" holds back over a hundred.
QUALITY = "LQ"
_DECODE = {"ulaw": PCMU.transcoder().decode, "alaw": PCMA.transcoder().decode}  # G.711 keeps no state
LAWS = ("auto", "ulaw", "alaw")


@dataclass(frozen=True)
class WireFormat:
    """The audio on one connection: ``encoding`` is "slin", "ulaw" or "alaw"."""

    encoding: str
    rate: int

    @property
    def call_rate(self) -> int:
        """The rate the call runs at: 16 kHz from wideband wires up, else 8 kHz."""
        return 16000 if self.rate >= 16000 else 8000

    def __str__(self) -> str:
        return f"{self.encoding}/{self.rate}"


def detect(payload: bytes, rate: int, law: str = "auto") -> WireFormat:
    """The format of a connection whose first audio message is ``payload`` of kind
    ``rate``; ``law`` says which G.711 law a 160-byte frame is, or "auto" to guess."""
    if rate != 8000 or len(payload) != G711_FRAME:
        return WireFormat("slin", rate)
    return WireFormat(guess_law(payload) if law == "auto" else law, 8000)


def guess_law(payload: bytes) -> str:
    """mu-law or A-law: the law under which the audio is smoother (see the module text)."""
    scores = {name: _roughness(decode(payload)) for name, decode in _DECODE.items()}
    return "alaw" if scores["alaw"] < scores["ulaw"] else "ulaw"


def _roughness(pcm: bytes) -> float:
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.mean(np.abs(np.diff(samples))) + np.median(np.abs(samples)))


class Bridge:
    """Converts one connection's audio to the call's rate and back."""

    def __init__(self, wire: WireFormat) -> None:
        self.wire = wire
        self.call_rate = wire.call_rate
        self._inbound = Resampler(wire.rate, self.call_rate, QUALITY)
        self._outbound = Resampler(self.call_rate, wire.rate, QUALITY)
        self._queue = bytearray()
        self._wire_frame = frame_bytes(wire.rate)

    def inbound(self, payload: bytes) -> bytes:
        """One message's audio -> signed linear at the call's rate (any length)."""
        if self.wire.encoding != "slin":
            payload = _DECODE[self.wire.encoding](payload)
        return self._inbound.process(payload)

    def outbound(self, frame: bytes) -> bytes:
        """One 20 ms frame at the call's rate -> one 20 ms frame of signed linear at the
        wire's rate (silence while the resampler fills at the start)."""
        self._queue += self._outbound.process(frame)
        if len(self._queue) < self._wire_frame:
            return bytes(self._wire_frame)
        out = bytes(self._queue[:self._wire_frame])
        del self._queue[:self._wire_frame]
        return out
