"""Audio conventions shared by every layer.

A frame is 20 ms of mono signed 16-bit little-endian PCM at a stated sample rate
(DESIGN.md, "Audio"). Everything that moves audio between tasks moves whole frames,
so pacing, jitter buffering and VAD windows all line up on the same 20 ms grid.
"""

from __future__ import annotations

FRAME_MS = 20
SAMPLE_WIDTH = 2  # bytes per sample: signed 16-bit little-endian


def frame_samples(rate: int) -> int:
    """Samples in one 20 ms frame at ``rate`` Hz."""
    return rate * FRAME_MS // 1000


def frame_bytes(rate: int) -> int:
    """Bytes in one 20 ms frame of s16le mono PCM at ``rate`` Hz."""
    return frame_samples(rate) * SAMPLE_WIDTH


def silence(rate: int, ms: int = FRAME_MS) -> bytes:
    """``ms`` milliseconds of digital silence at ``rate`` Hz."""
    return bytes(rate * ms // 1000 * SAMPLE_WIDTH)


def duration_ms(pcm: bytes | bytearray, rate: int) -> float:
    """Playing time of ``pcm`` (s16le mono) at ``rate`` Hz, in milliseconds."""
    return len(pcm) / SAMPLE_WIDTH * 1000 / rate
