"""OpenAI chat completions as the LLM protocol, against OpenAI or any compatible server.

The reply is streamed (``stream=True``): text is spoken as it arrives, so a caller hears
the first words while the model is still writing the rest. :class:`ChatAssembler` is the
sans-IO half: chunks in, :class:`TextDelta` / :class:`ToolCall` / :class:`LlmDone` out.
A tool call arrives in pieces keyed by ``index``, its ``id`` and ``name`` in the first
piece only and its JSON arguments spread over the rest, and several calls may share one
reply. OpenAI sends parallel calls one after the other, but compatible servers may
interleave their pieces, so a call is known whole only when the choice finishes: every
call is emitted then, in index order.

Retries happen before the first token only: the client's own ``max_retries`` covers
connection errors, 429 and 5xx before the response starts. Once the response has begun,
a failure is a :class:`ProviderError` and never a retry, since the caller may already
have heard the first half of the sentence.

This module also holds what every OpenAI HTTP provider needs the same way: turning the
client library's exceptions into one-line errors, and closing a response promptly.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import trio

from ..base import LlmDone, LlmEvent, Message, ProviderError, TextDelta, ToolCall, ToolSpec
from .client import OpenAISettings

if TYPE_CHECKING:
    import httpx2
    from openai import OpenAIError
    from openai.types.chat import ChatCompletionChunk

DEFAULT_MODEL = "gpt-4o-mini"
#: What a phone agent answers with unless told otherwise ([llm] temperature's default).
DEFAULT_TEMPERATURE = 0.7
#: The chat API's range of ``temperature``.
TEMPERATURES = (0.0, 2.0)
#: Longest piece of a service's error message we repeat.
MAX_DETAIL = 200
#: Looks like an OpenAI secret key (sk-..., sk-proj-...), masked or not.
_KEY_LIKE = re.compile(r"sk-[\w*.-]{6,}")


@dataclass
class _PartialCall:
    id: str = ""
    name: str = ""
    arguments: str = ""


class ChatAssembler:
    """A streamed chat completion's chunks in, LLM events out; no I/O.

    Feed every chunk to :meth:`feed` and call :meth:`finish` once the stream has ended.
    Only the first choice is read (trivox asks for one).
    """

    def __init__(self) -> None:
        self._calls: dict[int, _PartialCall] = {}
        self._finish_reason: str | None = None

    def feed(self, chunk: ChatCompletionChunk) -> list[LlmEvent]:
        events: list[LlmEvent] = []
        for choice in chunk.choices:
            if choice.index != 0:
                continue
            delta = choice.delta
            if delta.content:
                events.append(TextDelta(delta.content))
            for piece in delta.tool_calls or ():
                call = self._calls.setdefault(piece.index, _PartialCall())
                # Some servers repeat the id and name in every piece: keep, do not append.
                call.id = piece.id or call.id
                if piece.function is not None:
                    call.name = piece.function.name or call.name
                    call.arguments += piece.function.arguments or ""
            if choice.finish_reason and self._finish_reason is None:
                self._finish_reason = choice.finish_reason
                events += self._whole_calls()
        return events

    def finish(self) -> list[LlmEvent]:
        """The stream has ended: any call still pending, then :class:`LlmDone`.

        A server that ends without a finish reason is taken to have stopped (or called
        tools, if it did).
        """
        reason = self._finish_reason or ("tool_calls" if self._calls else "stop")
        return [*self._whole_calls(), LlmDone(reason)]

    def _whole_calls(self) -> list[LlmEvent]:
        calls, self._calls = self._calls, {}
        events: list[LlmEvent] = []
        for index, call in sorted(calls.items()):
            if not call.name:
                raise ProviderError(f"the chat service sent tool call {index} without a function name")
            # A call without an id (some local servers) still needs one the history can cite.
            events.append(ToolCall(call.id or f"call_{index}", call.name, call.arguments or "{}"))
        return events


class OpenAILLM:
    """The LLM protocol on ``/chat/completions`` of ``settings``' service.

    ``temperature`` (0..2) is 0.7 unless set, steadier than the service's usual 1.0
    for a phone agent; None, and an unset ``max_tokens``, leave it to the service (or
    the local model).
    """

    name = "openai"

    def __init__(self, settings: OpenAISettings, model: str = DEFAULT_MODEL,
                 temperature: float | None = DEFAULT_TEMPERATURE, max_tokens: int | None = None) -> None:
        low, high = TEMPERATURES
        if temperature is not None and not low <= temperature <= high:
            raise ProviderError(f"OpenAI chat temperature must be {low:g}..{high:g}, not {temperature}")
        if max_tokens is not None and max_tokens <= 0:
            raise ProviderError(f"OpenAI chat max_tokens must be positive, not {max_tokens}")
        if not model:
            raise ProviderError("OpenAI chat needs a model name (for example gpt-4o-mini)")
        self._settings = settings
        self._service = f"OpenAI chat model {model!r}"
        self._options: dict[str, Any] = {"model": model}
        if temperature is not None:
            self._options["temperature"] = temperature
        if max_tokens is not None:
            self._options["max_tokens"] = max_tokens
        self._client = settings.async_client()

    async def chat(self, messages: Sequence[Message], tools: Sequence[ToolSpec] = ()) -> AsyncIterator[LlmEvent]:
        from openai import OpenAIError

        request: dict[str, Any] = {**self._options, "messages": [dict(message) for message in messages],
                                   "stream": True}
        if tools:
            request["tools"] = [_tool(spec) for spec in tools]
        try:
            stream = await self._client.chat.completions.create(**request)
        except OpenAIError as exc:
            raise failure(self._service, self._settings, exc) from None
        assembler = ChatAssembler()
        async with closing(stream):
            try:
                async for chunk in stream:
                    for event in assembler.feed(chunk):
                        yield event
            except OpenAIError as exc:
                raise failure(self._service, self._settings, exc, during_reply=True) from None
        for event in assembler.finish():
            yield event


def _tool(spec: ToolSpec) -> dict[str, Any]:
    return {"type": "function",
            "function": {"name": spec.name, "description": spec.description, "parameters": dict(spec.parameters)}}


# --- shared by the OpenAI HTTP providers ------------------------------------------------


class _Closable(Protocol):
    async def close(self) -> None: ...


@asynccontextmanager
async def closing(response: _Closable) -> AsyncIterator[None]:
    """Close ``response`` on the way out, even when the consumer was cancelled.

    Leaving the loop over a stream does not close it: the library's own iterators would
    close the response only when garbage collection finalises them, and until then the
    service goes on generating, and billing, a reply no one hears. The close is shielded
    because a barge-in runs it inside a cancelled scope, and it must reach the socket
    whatever checkpoints the HTTP stack has on the way (httpcore takes a lock first).
    """
    try:
        yield
    finally:
        with trio.CancelScope(shield=True):
            await response.close()


def failure(service: str, settings: OpenAISettings, exc: OpenAIError | httpx2.RequestError, *,
            during_reply: bool = False) -> ProviderError:
    """One line for a failed request, naming ``service`` (what and which model), where it
    was sent and, where one applies, the fix. The API key is never part of it.

    ``exc`` is the client library's error, or httpx2's: a raw response body (speech)
    is read straight from httpx2, whose errors the library does not wrap.
    """
    import httpx2
    import openai

    where = f"{service} at {_public(settings.url)}"
    if isinstance(exc, openai.APITimeoutError | httpx2.TimeoutException):
        silence = "went silent mid-reply for" if during_reply else "did not answer within"
        text = f"{where} {silence} {settings.timeout:g} s (check the server, or raise [openai] timeout)"
    elif isinstance(exc, openai.APIConnectionError | httpx2.RequestError):
        cause = _detail(str(exc.__cause__ or exc) if isinstance(exc, openai.APIConnectionError) else str(exc))
        text = f"{where}: the reply broke off ({cause})" if during_reply else \
            f"{where} cannot be reached ({cause}): check [openai] base_url"
    elif isinstance(exc, openai.AuthenticationError):
        # OpenAI's message quotes part of the key: leave it out.
        text = f"{where} refused the API key (HTTP 401): set [openai] api_key, e.g. api_key = \"${{OPENAI_API_KEY}}\""
    elif isinstance(exc, openai.APIStatusError):
        message = exc.body.get("message") if isinstance(exc.body, dict) else None
        text = f"{where} answered HTTP {exc.status_code}: {_detail(str(message or exc.message))}"
        if exc.status_code == 404:
            text += " (check the model name and [openai] base_url)"
    else:
        text = f"{where} failed{' mid-reply' if during_reply else ''}: {_detail(str(exc))}"
    if settings.api_key:
        text = text.replace(settings.api_key, "[api key]")
    return ProviderError(_KEY_LIKE.sub("[api key]", text))


def _public(url: str) -> str:
    """``url`` without credentials or query (a proxy may carry a token in either)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def _detail(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= MAX_DETAIL else line[:MAX_DETAIL - 3] + "..."
