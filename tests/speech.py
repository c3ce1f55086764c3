"""Speech for tests, made with the same eSpeak NG engine trivox speaks with."""

from __future__ import annotations

import functools

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
