"""Providers by the ``type`` the config names.

One table per kind maps a type to a builder that checks its options and imports its
provider only when chosen, so a server that speaks with eSpeak never loads a cloud SDK.
Third-party providers plug in through the entry-point group ``trivox.providers``: an
entry point named ``KIND.TYPE`` (``asr.acme``, ``tts.acme``, ``llm.acme``, ``sts.acme``)
is a callable that takes the options mapping and returns the provider.

A builder gets ``options``: the keys of the kind's table that the file set (``type``
aside), and ``shared``: the ``[openai]`` and ``[google]`` tables. Every mistake is a
ProviderError with one line naming the provider, the option and the fix, including an
option that the chosen provider does not take (``asr.keywords`` on OpenAI's ASR).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from importlib.metadata import entry_points
from typing import Any

from .base import ASR, LLM, STS, TTS, ProviderError

ENTRY_POINT_GROUP = "trivox.providers"
KINDS = ("asr", "llm", "tts", "sts")

Options = Mapping[str, Any]
Shared = Mapping[str, Mapping[str, Any]]
Builder = Callable[[Options, Shared], Any]


def build(kind: str, type_: str, options: Options, shared: Shared | None = None) -> Any:
    """The ``kind`` provider ("asr", "llm", "tts", "sts") of type ``type_``."""
    builder = _BUILDERS[kind].get(type_)
    if builder is None:
        found = entry_points(group=ENTRY_POINT_GROUP, name=f"{kind}.{type_}")
        if not found:
            known = ", ".join(sorted(_BUILDERS[kind]))
            raise ProviderError(f"unknown {kind.upper()} provider {type_!r}: use one of {known}, "
                                f"or install one that registers {kind}.{type_} in {ENTRY_POINT_GROUP}")
        factory = next(iter(found)).load()
        return factory(options)
    return builder(options, shared or {})


def build_asr(type_: str, options: Options, shared: Shared | None = None) -> ASR:
    return build("asr", type_, options, shared)


def build_tts(type_: str, options: Options, shared: Shared | None = None) -> TTS:
    return build("tts", type_, options, shared)


def build_llm(type_: str, options: Options, shared: Shared | None = None) -> LLM:
    return build("llm", type_, options, shared)


def build_sts(type_: str, options: Options, shared: Shared | None = None) -> STS:
    return build("sts", type_, options, shared)


# --- the built-in builders: each checks its options, then imports its provider ----------


def _local_asr(options: Options, shared: Shared) -> ASR:
    values = _checked("local ASR (pocketsphinx)", options, {"keywords": list, "grammar": str})
    return _provider("local.sphinx", "SphinxASR", "pocketsphinx", "")(**values)


def _local_tts(options: Options, shared: Shared) -> TTS:
    values = _checked("local TTS (eSpeak NG)", options, {"voice": str, "rate": int, "pitch": int})
    return _provider("local.espeak", "EspeakTTS", "eSpeak NG", "")(**values)


def _openai_asr(options: Options, shared: Shared) -> ASR:
    values = _checked("OpenAI ASR", options, {"model": str, "language": str, "prompt": str})
    return _provider("openai.transcribe", "OpenAITranscriber", "OpenAI ASR", "openai")(
        _openai(shared, "OpenAI ASR"), **values)


def _openai_realtime_asr(options: Options, shared: Shared) -> ASR:
    values = _checked("OpenAI realtime ASR", options, {"model": str, "language": str})
    return _provider("openai.realtime_transcribe", "OpenAIRealtimeTranscriber", "OpenAI realtime ASR", "openai")(
        _openai(shared, "OpenAI realtime ASR"), **values)


def _openai_llm(options: Options, shared: Shared) -> LLM:
    values = _checked("OpenAI LLM", options, {"model": str, "temperature": float, "max_tokens": int})
    return _provider("openai.llm", "OpenAILLM", "OpenAI LLM", "openai")(_openai(shared, "OpenAI LLM"), **values)


def _openai_tts(options: Options, shared: Shared) -> TTS:
    values = _checked("OpenAI TTS", options, {"model": str, "voice": str, "instructions": str, "speed": float})
    return _provider("openai.tts", "OpenAITTS", "OpenAI TTS", "openai")(_openai(shared, "OpenAI TTS"), **values)


def _openai_sts(options: Options, shared: Shared) -> STS:
    values = _checked("OpenAI Realtime", options, {"model": str, "voice": str, "temperature": float,
                                                   "max_output_tokens": int, "turn_detection": str,
                                                   "input_transcription": str})
    if values.get("turn_detection") == "trivox":
        values["turn_detection"] = "none"  # our VAD cuts the turns; the service waits to be asked
    return _provider("openai.realtime", "OpenAIRealtime", "OpenAI Realtime", "openai")(
        _openai(shared, "OpenAI Realtime"), **values)


def _google_asr(options: Options, shared: Shared) -> ASR:
    values = _checked("Google Speech-to-Text", options, {"model": str, "language": str, "encoding": str,
                                                         "use_enhanced": bool})
    return _provider("google.speech", "GoogleSpeech", "Google Speech-to-Text", "google")(**values, **_google(shared))


def _google_tts(options: Options, shared: Shared) -> TTS:
    values = _checked("Google Text-to-Speech", options, {"voice": str, "language": str, "speed": float,
                                                         "encoding": str, "streaming": bool})
    if "speed" in values:
        values["speaking_rate"] = values.pop("speed")
    return _provider("google.tts", "GoogleTTS", "Google Text-to-Speech", "google")(**values, **_google(shared))


def _avr(kind: str) -> Builder:
    """AVR connectors take only their service's URL."""

    def builder(options: Options, shared: Shared) -> Any:
        provider = f"AVR {kind.upper()}"
        values = _checked(provider, options, {"url": str})
        if not values.get("url"):
            raise ProviderError(f"{provider} needs the service's URL: set {kind}.url")
        module, name = {"asr": ("http", "AvrAsr"), "llm": ("http", "AvrLlm"), "tts": ("http", "AvrTts"),
                        "sts": ("sts", "AvrSts")}[kind]
        return _provider(f"avr.{module}", name, provider, "avr")(values["url"])

    return builder


def _provider(module: str, name: str, provider: str, extra: str) -> Any:
    """The class ``name`` of ``providers.<module>``, imported only now that it is chosen;
    a library of its that is not installed is a ProviderError naming the extra to install."""
    try:
        return getattr(importlib.import_module(f"{__package__}.{module}"), name)
    except ImportError as exc:
        fix = f"pip install 'trivox[{extra}]'" if extra else "reinstall trivox"
        raise ProviderError(f"{provider} needs {exc.name or 'a library that is not installed'}: {fix}") from None


def _openai(shared: Shared, provider: str):  # -> OpenAISettings
    from .openai.client import OpenAISettings

    table = dict(shared.get("openai", {}))
    table["api_key"] = table.get("api_key") or os.environ.get("OPENAI_API_KEY", "")
    settings = OpenAISettings(**table)
    if not settings.api_key and not settings.base_url:
        raise ProviderError(f"{provider} needs an API key: set OPENAI_API_KEY (or openai.api_key), "
                            "or openai.base_url for a server that needs none")
    return settings


def _google(shared: Shared) -> dict[str, str]:
    return {key: value for key, value in shared.get("google", {}).items() if value}


def _checked(provider: str, options: Options, schema: Mapping[str, type]) -> dict[str, Any]:
    """``options`` once every key is known to ``schema`` and every value has its type."""
    for key, value in options.items():
        expected = schema.get(key)
        if expected is None:
            known = ", ".join(schema) or "no options"
            raise ProviderError(f"{provider} has no option {key!r} (it takes {known})")
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            continue
        if not isinstance(value, expected) or (isinstance(value, bool) and expected is not bool):
            raise ProviderError(f"{provider} option {key!r} must be {expected.__name__}, not {value!r}")
    return {key: float(value) if schema[key] is float else value for key, value in options.items()}


_BUILDERS: dict[str, dict[str, Builder]] = {
    "asr": {"local": _local_asr, "openai": _openai_asr, "openai-realtime": _openai_realtime_asr,
            "google": _google_asr, "avr": _avr("asr")},
    "llm": {"openai": _openai_llm, "avr": _avr("llm")},
    "tts": {"local": _local_tts, "openai": _openai_tts, "google": _google_tts, "avr": _avr("tts")},
    "sts": {"openai": _openai_sts, "avr": _avr("sts")},
}
