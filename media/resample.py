"""Streaming sample-rate conversion between a call's rate and its consumers' rates.

A call runs at its codec's rate (8 kHz for G.711) while ASR wants 16 kHz and OpenAI
Realtime 24 kHz. Resampling each 20 ms chunk on its own restarts the filter at every
chunk border and clicks 50 times a second; a streaming resampler keeps the filter state
(and the fractional sample position) from one chunk to the next, so the output is the same
as if the whole signal had been converted at once. One :class:`Resampler` per stream
direction, for the life of the stream (DESIGN.md, "Audio").
"""

from __future__ import annotations

import numpy as np
import soxr

from media.audio import SAMPLE_WIDTH

DEFAULT_QUALITY = "HQ"  # soxr's default: 20-bit precision, far above 16-bit telephony
_WIRE_DTYPE = np.dtype("<i2")  # s16le, whatever the host byte order
_NATIVE_DTYPE = np.dtype(np.int16)


class Resampler:
    """Stateful s16le mono resampler wrapping :class:`soxr.ResampleStream`.

    Output lags input: the first chunks come out short or empty and the remainder is
    released by :meth:`flush` at the end of the stream. soxr works in internal blocks, so
    at "MQ" and above 20 ms chunks come out in bursts about every 100 ms (measured with
    soxr 1.1: up to ~135 ms from input to output for 8 <-> 16 kHz, ~95 ms for 24 -> 8 kHz
    at "HQ"; ~80/60 ms at "LQ"; one chunk at "QQ", which is cubic interpolation with no
    anti-alias filter and so only fit for upsampling). Pick ``quality`` per leg with that
    latency in mind. Equal rates pass the audio through untouched.
    """

    def __init__(self, in_rate: int, out_rate: int, quality: str = DEFAULT_QUALITY) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, not {in_rate} -> {out_rate}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream = (
            None
            if in_rate == out_rate
            else soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)
        )
        self._flushed = False

    def process(self, pcm: bytes) -> bytes:
        """Convert the next chunk of the stream (any whole number of samples)."""
        if self._flushed:
            raise RuntimeError("resampler already flushed; make a new one for a new stream")
        if len(pcm) % SAMPLE_WIDTH:
            raise ValueError(f"PCM length {len(pcm)} is not a whole number of 16-bit samples")
        if self._stream is None:
            return pcm
        return _resample(self._stream, np.frombuffer(pcm, dtype=_WIRE_DTYPE), last=False)

    def flush(self) -> bytes:
        """Release the samples still inside the filter; the stream ends here."""
        if self._flushed:
            raise RuntimeError("resampler already flushed")
        self._flushed = True
        if self._stream is None:
            return b""
        return _resample(self._stream, np.zeros(0, dtype=_WIRE_DTYPE), last=True)


def _resample(stream: soxr.ResampleStream, samples: np.ndarray, *, last: bool) -> bytes:
    out = stream.resample_chunk(samples.astype(_NATIVE_DTYPE, copy=False), last=last)
    return out.astype(_WIRE_DTYPE, copy=False).tobytes()
