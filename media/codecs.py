"""The RTP audio codecs trivox speaks: G.711 (PCMU, PCMA), G.722 and L16.

G.711 is the one codec every SIP peer and every Asterisk trunk can speak, so it is the
default. The wideband pair pays where the peer has it: at 16 kHz an ASR hears the
consonants that G.711's 3.4 kHz band cuts off. G.722 comes from the ``g722`` package
(sippy's libg722, a C extension); L16 is plain 16-bit PCM in network byte order
(RFC 3551 section 4.5.11), for LAN peers with bandwidth to spare.

A :class:`Codec` is what SDP negotiates (name, payload type, clock rate); the per-stream
state a codec may need lives in the :class:`Transcoder` that :meth:`Codec.transcoder`
makes, one per call: G.722 is ADPCM, so its encoder and decoder each carry state from
one packet to the next and must see their stream in order.

Two rates, which differ for G.722 only: ``clock_rate`` is the RTP timestamp clock that
SDP writes in ``a=rtpmap``, and ``sample_rate`` is the rate of the PCM the codec
carries. RFC 3551 section 4.5.2 keeps G.722's RTP clock at 8000 Hz, for compatibility
with a mistake in RFC 1890, while it samples at 16 kHz.

G.711 transcoding is C code in ``audioop``: in the standard library on Python 3.11/3.12
(deprecated there, hence the silenced warning) and provided under the same name by
``audioop-lts`` on 3.13+, where the stdlib copy was removed (PEP 594).
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

if sys.version_info >= (3, 13):
    import audioop  # the audioop-lts distribution
else:
    with warnings.catch_warnings():
        # PEP 594 deprecates audioop; the warning says nothing a trivox user can act on.
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop

from media.audio import SAMPLE_WIDTH

#: RFC 3551 section 6, table 4: static payload types.
PCMU_PAYLOAD_TYPE = 0
PCMA_PAYLOAD_TYPE = 8
G722_PAYLOAD_TYPE = 9
#: L16 at 16 kHz mono has no static type (table 4 lists only 44.1 kHz stereo and mono);
#: this is the dynamic type we offer it under.
L16_PAYLOAD_TYPE = 96
G711_CLOCK_RATE = 8000
#: G.722 at 64 kbit/s: the rate every SIP peer means by "G722/8000".
G722_BIT_RATE = 64000

_WIRE = np.dtype("<i2")  # our PCM: s16le
_NETWORK = np.dtype(">i2")  # L16 on the wire: s16be (RFC 3551 section 4.5.11)


class Transcoder(Protocol):
    """One stream's encoder and decoder: PCM at the codec's sample rate <-> payloads."""

    def encode(self, pcm: bytes) -> bytes:
        """s16le mono PCM -> one RTP payload."""

    def decode(self, payload: bytes) -> bytes:
        """One RTP payload -> s16le mono PCM."""


def _check_pcm(pcm: bytes) -> None:
    if len(pcm) % SAMPLE_WIDTH:
        raise ValueError(f"PCM length {len(pcm)} is not a whole number of 16-bit samples")


class G711:
    """Stateless companding: one byte per sample."""

    def __init__(self, encode: Callable[[bytes, int], bytes], decode: Callable[[bytes, int], bytes]) -> None:
        self._encode = encode
        self._decode = decode

    def encode(self, pcm: bytes) -> bytes:
        _check_pcm(pcm)
        return self._encode(pcm, SAMPLE_WIDTH)

    def decode(self, payload: bytes) -> bytes:
        return self._decode(payload, SAMPLE_WIDTH)


class L16:
    """Linear 16-bit PCM; only the byte order changes."""

    def encode(self, pcm: bytes) -> bytes:
        _check_pcm(pcm)
        return np.frombuffer(pcm, dtype=_WIRE).astype(_NETWORK).tobytes()

    def decode(self, payload: bytes) -> bytes:
        usable = len(payload) - len(payload) % SAMPLE_WIDTH  # a stray odd byte is dropped
        return np.frombuffer(payload[:usable], dtype=_NETWORK).astype(_WIRE).tobytes()


class G722:
    """G.722 at 64 kbit/s: an encoder and a decoder, each with its own ADPCM state."""

    def __init__(self) -> None:
        from G722 import G722 as Engine  # the g722 distribution; imported only when used

        self._encoder = Engine(16000, G722_BIT_RATE)
        self._decoder = Engine(16000, G722_BIT_RATE)

    def encode(self, pcm: bytes) -> bytes:
        _check_pcm(pcm)
        samples = np.frombuffer(pcm, dtype=_WIRE).astype(np.int16)
        return bytes(self._encoder.encode(samples))

    def decode(self, payload: bytes) -> bytes:
        samples = np.asarray(self._decoder.decode(payload), dtype=np.int16)
        return samples.astype(_WIRE, copy=False).tobytes()


@dataclass(frozen=True)
class Codec:
    """An RTP audio codec as SDP names it, and how to make its per-stream transcoder.

    ``bytes_per_unit`` is payload bytes per RTP timestamp unit: 1 for G.711 (one byte a
    sample) and G.722 (64 kbit/s at an 8 kHz clock), 2 for L16.
    """

    name: str
    payload_type: int
    clock_rate: int
    sample_rate: int
    bytes_per_unit: int
    _make: Callable[[], Transcoder] = field(repr=False, compare=False)

    def __post_init__(self) -> None:
        # RFC 3550 section 5.1: PT is a 7-bit field.
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"payload type {self.payload_type} is outside 0..127")
        if self.clock_rate <= 0 or self.sample_rate <= 0:
            raise ValueError(f"rates must be positive, not {self.clock_rate}/{self.sample_rate}")

    def transcoder(self) -> Transcoder:
        """A fresh encoder/decoder pair for one stream."""
        return self._make()

    def units(self, payload: bytes) -> int:
        """RTP timestamp units that ``payload`` covers (160 for 20 ms of G.711)."""
        return len(payload) // self.bytes_per_unit

    @property
    def rtpmap(self) -> str:
        """The ``a=rtpmap`` encoding as SDP writes it, e.g. ``G722/8000``."""
        return f"{self.name}/{self.clock_rate}"


PCMU = Codec("PCMU", PCMU_PAYLOAD_TYPE, G711_CLOCK_RATE, 8000, 1,
             lambda: G711(audioop.lin2ulaw, audioop.ulaw2lin))
PCMA = Codec("PCMA", PCMA_PAYLOAD_TYPE, G711_CLOCK_RATE, 8000, 1,
             lambda: G711(audioop.lin2alaw, audioop.alaw2lin))
G722_CODEC = Codec("G722", G722_PAYLOAD_TYPE, 8000, 16000, 1, G722)
L16_CODEC = Codec("L16", L16_PAYLOAD_TYPE, 16000, 16000, 2, L16)

CODECS: dict[str, Codec] = {codec.name: codec for codec in (PCMU, PCMA, G722_CODEC, L16_CODEC)}


def codec_by_name(name: str) -> Codec:
    """The codec an SDP ``a=rtpmap`` encoding name refers to.

    Encoding names are case-insensitive (RFC 4855 section 3 registers them as media
    subtype names, which RFC 6838 section 4.2 makes case-insensitive), and peers do send
    ``pcmu``, so the lookup folds case.
    """
    try:
        return CODECS[name.upper()]
    except KeyError:
        known = ", ".join(CODECS)
        raise KeyError(f"unsupported codec {name!r}; trivox speaks {known}") from None
