"""Audio for tests: speech made with the same eSpeak NG engine trivox speaks with, and tones."""

from __future__ import annotations

import functools

import numpy as np

from providers.local.espeak import EspeakTTS

#: An eSpeak variant pocketsphinx's acoustic model hears better than the default voice
#: (measured at 8 kHz: about twice the words); for tests that check recognised words.
CLEAR_VOICE = "en-us+klatt4"


@functools.lru_cache(maxsize=64)
def speak(text: str, rate: int = 8000, voice: str = "en-us", wpm: int = 175) -> bytes:
    """``text`` as s16le mono PCM at ``rate`` Hz.

    Synchronous (a sentence takes a few milliseconds), so it makes test data anywhere,
    inside a Trio test or before ``trio.run``; cached, because tests say the same things.
    """
    return EspeakTTS(voice=voice, rate=wpm).render(text, rate)


def tone(ms: float, rate: int, hz: float = 440.0, amplitude: int = 8000) -> bytes:
    """``ms`` milliseconds of a sine as s16le mono at ``rate``: audio a test can check by
    length and pitch (a byte out of place anywhere turns it into noise)."""
    t = np.arange(int(rate * ms / 1000)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()
