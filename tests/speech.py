"""Speech for tests, made with the same eSpeak NG engine trivox speaks with."""

from __future__ import annotations

import functools

import numpy as np
import soxr

from providers.local.espeak import _Engine


@functools.lru_cache(maxsize=64)
def speak(text: str, rate: int = 8000, voice: str = "en-us") -> bytes:
    """``text`` as s16le mono PCM at ``rate`` Hz (synchronous: for making test data)."""
    engine = _Engine.get()
    blocks: list[bytes] = []
    with engine.lock:
        engine.set_voice(voice, 175, 50)
        engine.synth(text, lambda block: blocks.append(block) or True)
    samples = np.frombuffer(b"".join(blocks), dtype="<i2")
    return soxr.resample(samples, engine.rate, rate).astype("<i2").tobytes()
