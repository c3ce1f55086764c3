"""G.711 mu-law (PCMU) and A-law (PCMA) over the 16-bit linear frames of media.audio.

G.711 is the one codec every SIP peer and every Asterisk trunk can speak, so it is the
default for every call. The transcoding itself is C code in ``audioop``: in the standard
library on Python 3.11/3.12 (deprecated there, hence the silenced warning) and provided
under the same module name by the ``audioop-lts`` distribution on 3.13+, where the stdlib
copy was removed (PEP 594). Both are a table lookup per sample, far below a frame's cost.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass

if sys.version_info >= (3, 13):
    import audioop  # the audioop-lts distribution
else:
    with warnings.catch_warnings():
        # PEP 594 deprecates audioop; the warning says nothing a trivox user can act on.
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop

from media.audio import SAMPLE_WIDTH

# RFC 3551 section 6, table 4: static payload types and clock rates of the G.711 pair.
PCMU_PAYLOAD_TYPE = 0
PCMA_PAYLOAD_TYPE = 8
G711_CLOCK_RATE = 8000

_Transcode = Callable[[bytes, int], bytes]

# name -> (encode linear to companded, decode companded to linear)
_TRANSCODERS: dict[str, tuple[_Transcode, _Transcode]] = {
    "PCMU": (audioop.lin2ulaw, audioop.ulaw2lin),
    "PCMA": (audioop.lin2alaw, audioop.alaw2lin),
}


@dataclass(frozen=True)
class Codec:
    """An RTP audio codec as SDP names it: encoding name, payload type and clock rate.

    One G.711 byte carries one sample, so a 20 ms frame at 8 kHz (320 bytes of PCM)
    becomes a 160-byte payload and the RTP timestamp advances by 160 per packet.
    """

    name: str
    payload_type: int
    clock_rate: int

    def __post_init__(self) -> None:
        if self.name not in _TRANSCODERS:
            raise ValueError(f"no transcoder for codec {self.name!r}")
        # RFC 3550 section 5.1: PT is a 7-bit field.
        if not 0 <= self.payload_type <= 127:
            raise ValueError(f"payload type {self.payload_type} is outside 0..127")
        if self.clock_rate <= 0:
            raise ValueError(f"clock rate must be positive, not {self.clock_rate}")

    def encode(self, pcm: bytes) -> bytes:
        """Compand s16le mono PCM into one G.711 byte per sample."""
        if len(pcm) % SAMPLE_WIDTH:
            raise ValueError(f"PCM length {len(pcm)} is not a whole number of 16-bit samples")
        return _TRANSCODERS[self.name][0](pcm, SAMPLE_WIDTH)

    def decode(self, payload: bytes) -> bytes:
        """Expand a G.711 payload back into s16le mono PCM (two bytes per input byte)."""
        return _TRANSCODERS[self.name][1](payload, SAMPLE_WIDTH)


PCMU = Codec("PCMU", PCMU_PAYLOAD_TYPE, G711_CLOCK_RATE)
PCMA = Codec("PCMA", PCMA_PAYLOAD_TYPE, G711_CLOCK_RATE)

CODECS: dict[str, Codec] = {codec.name: codec for codec in (PCMU, PCMA)}


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
