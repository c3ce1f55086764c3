"""Providers by type: the built-in ones' checks, and third-party ones through entry points."""

from __future__ import annotations

import sys

import pytest

from providers.base import ProviderError
from providers.registry import build, build_llm, build_sts

PLUGIN = '''
class EchoLLM:
    name = "acme"

    def __init__(self, options):
        self.options = dict(options)


def build(options):
    return EchoLLM(options)
'''


@pytest.fixture
def acme_distribution(tmp_path, monkeypatch):
    """An installed distribution "acme-trivox" that registers llm.acme, as pip would lay it out."""
    (tmp_path / "acme_trivox.py").write_text(PLUGIN)
    info = tmp_path / "acme_trivox-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-trivox\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[trivox.providers]\nllm.acme = acme_trivox:build\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield
    sys.modules.pop("acme_trivox", None)


def test_an_entry_point_provides_a_type_and_gets_the_options(acme_distribution):
    llm = build_llm("acme", {"model": "roadrunner", "speed": 3})
    assert llm.name == "acme" and llm.options == {"model": "roadrunner", "speed": 3}
    # Registered for the LLM only: the same type is unknown to another kind.
    with pytest.raises(ProviderError, match="unknown STS provider 'acme'.*registers sts.acme in trivox.providers"):
        build_sts("acme", {})


def test_an_openai_provider_needs_a_key_unless_a_base_url_is_given(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(ProviderError, match="OpenAI LLM needs an API key: set OPENAI_API_KEY"):
        build_llm("openai", {})
    llm = build_llm("openai", {"model": "llama3"}, {"openai": {"base_url": "http://127.0.0.1:11434/v1"}})
    assert llm.name == "openai"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-the-environment")
    assert build_llm("openai", {}).name == "openai"


def test_options_are_checked_by_the_chosen_provider():
    with pytest.raises(ProviderError, match=r"OpenAI TTS option 'speed' must be float, not 'fast'"):
        build("tts", "openai", {"speed": "fast"}, {"openai": {"api_key": "k"}})
    with pytest.raises(ProviderError, match="AVR STS needs the service's URL: set sts.url"):
        build_sts("avr", {})


def test_a_missing_library_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "trio_websocket", None)  # as if trio-websocket were not installed
    monkeypatch.delitem(sys.modules, "providers.openai.realtime", raising=False)
    with pytest.raises(ProviderError) as info:
        build_sts("openai", {}, {"openai": {"api_key": "k"}})
    assert str(info.value) == "OpenAI Realtime needs trio_websocket: pip install 'trivox[openai]'"
