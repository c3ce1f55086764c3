"""Providers by the ``type`` the config names.

One table per kind maps a type to a builder that checks its options and imports its
provider only when chosen, so a server that speaks with eSpeak never loads a cloud SDK.
A new provider (openai, google) is one builder and one table row. Every mistake is a
ProviderError with one line naming the provider, the option and the fix.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .base import ASR, TTS, ProviderError


def build_asr(kind: str, options: Mapping[str, object]) -> ASR:
    """The ASR provider of type ``kind``, configured by ``options``."""
    builder = _ASR_BUILDERS.get(kind)
    if builder is None:
        raise ProviderError(f"unknown ASR provider {kind!r}: use one of {', '.join(sorted(_ASR_BUILDERS))}")
    return builder(options)


def build_tts(kind: str, options: Mapping[str, object]) -> TTS:
    """The TTS provider of type ``kind``, configured by ``options``."""
    builder = _TTS_BUILDERS.get(kind)
    if builder is None:
        raise ProviderError(f"unknown TTS provider {kind!r}: use one of {', '.join(sorted(_TTS_BUILDERS))}")
    return builder(options)


def _local_asr(options: Mapping[str, object]) -> ASR:
    _checked("local ASR (pocketsphinx)", options, {})
    from .local.sphinx import SphinxASR

    return SphinxASR()


def _local_tts(options: Mapping[str, object]) -> TTS:
    values = _checked("local TTS (eSpeak NG)", options, {"voice": str, "rate": int, "pitch": int})
    from .local.espeak import EspeakTTS

    return EspeakTTS(**values)


def _checked(provider: str, options: Mapping[str, object], schema: Mapping[str, type]) -> dict[str, Any]:
    """``options`` once every key is known to ``schema`` and every value has its type."""
    for key, value in options.items():
        expected = schema.get(key)
        if expected is None:
            known = ", ".join(schema) or "no options"
            raise ProviderError(f"{provider} has no option {key!r} (it takes {known})")
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            raise ProviderError(f"{provider} option {key!r} must be {expected.__name__}, not {value!r}")
    return dict(options)


_ASR_BUILDERS: dict[str, Callable[[Mapping[str, object]], ASR]] = {"local": _local_asr}
_TTS_BUILDERS: dict[str, Callable[[Mapping[str, object]], TTS]] = {"local": _local_tts}
