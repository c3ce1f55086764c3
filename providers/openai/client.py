"""Where and how to reach an OpenAI (or OpenAI-compatible) service, shared by every
OpenAI provider so that one ``[openai]`` table configures them all.

The HTTP providers use the official ``AsyncOpenAI`` client, which runs under Trio through
anyio. The Realtime API is a WebSocket that trivox speaks over trio-websocket (the
library's own realtime client is asyncio-only), so its URL is derived here from the same
base URL: ``https://host/v1`` becomes ``wss://host/v1/realtime?model=...``.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit, urlunsplit

from ..base import ProviderError

DEFAULT_BASE_URL = "https://api.openai.com/v1"


@dataclass(frozen=True)
class OpenAISettings:
    """The service's address and the account's key; shared by LLM, TTS, ASR and STS."""

    api_key: str = ""
    #: Any OpenAI-compatible server (Ollama, vLLM, llama.cpp, a proxy); empty: OpenAI's.
    base_url: str = ""
    #: Seconds a request may take to connect and to produce its first byte.
    timeout: float = 10.0
    #: Retries of a request that failed before anything was received (connection
    #: errors, 429, 5xx); never once a reply has started.
    max_retries: int = 2

    @property
    def url(self) -> str:
        return (self.base_url or DEFAULT_BASE_URL).rstrip("/")

    def headers(self) -> dict[str, str]:
        """Authorization for a request the client library does not make (the WebSocket)."""
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def async_client(self):  # -> openai.AsyncOpenAI (imported lazily: an optional extra)
        try:
            from openai import AsyncOpenAI
        except ImportError:
            raise ProviderError("the OpenAI providers need the openai extra: pip install 'trivox[openai]'") from None
        # A local OpenAI-compatible server needs no key, but the client insists on one.
        return AsyncOpenAI(api_key=self.api_key or "unused", base_url=self.url,
                           timeout=self.timeout, max_retries=self.max_retries)

    def realtime_url(self, **query: str) -> str:
        """The Realtime WebSocket URL on this base URL, with ``query`` (model=..., intent=...)."""
        scheme, host, path, _, _ = urlsplit(self.url)
        ws_scheme = {"https": "wss", "http": "ws"}.get(scheme, scheme)
        return urlunsplit((ws_scheme, host, f"{path}/realtime", urlencode(query), ""))
