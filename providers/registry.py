"""Providers by the ``type`` named in the config.

Only the local providers exist so far; an unknown type is a one-line error that names
the provider and what would fix it.
"""

from __future__ import annotations

from collections.abc import Mapping

from .base import ASR, TTS, ProviderError

ASR_TYPES = ("local",)
TTS_TYPES = ("local",)


def build_asr(kind: str, options: Mapping[str, object]) -> ASR:
    if kind == "local":
        from .local.sphinx import SphinxASR

        return SphinxASR()
    raise ProviderError(f"unknown ASR provider {kind!r} (available: {', '.join(ASR_TYPES)})")


def build_tts(kind: str, options: Mapping[str, object]) -> TTS:
    if kind == "local":
        from .local.espeak import EspeakTTS

        return EspeakTTS(voice=str(options.get("voice", "en-us")), rate=int(options.get("rate", 175)),  # type: ignore[call-overload]
                         pitch=int(options.get("pitch", 50)))  # type: ignore[call-overload]
    raise ProviderError(f"unknown TTS provider {kind!r} (available: {', '.join(TTS_TYPES)})")
