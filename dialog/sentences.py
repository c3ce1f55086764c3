"""Cutting a streamed reply into sentences for TTS.

A language model streams its reply a few characters at a time, and a TTS engine speaks
best (and a cloud one costs least) given whole sentences. The agent speaks each sentence
as soon as it is complete, so the caller hears the first one while the model is still
writing the rest: the time to first audio is the time to the first sentence end.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator

#: A sentence ends at . ! ? (or ; :) followed by white space, or at a line break.
_END = re.compile(r"[.!?;:]+[\"')\]]*\s+|\n+")
#: A run-on "sentence" longer than this is cut at its last comma or space.
MAX_SENTENCE = 200


class SentenceSplitter:
    """Feed text pieces, take whole sentences; ``flush`` gives the rest at the end."""

    def __init__(self) -> None:
        self._pending = ""

    def feed(self, text: str) -> list[str]:
        self._pending += text
        sentences = []
        while True:
            match = _END.search(self._pending)
            if match is not None:
                cut = match.end()
            elif len(self._pending) > MAX_SENTENCE:
                head = self._pending[:MAX_SENTENCE]
                cut = max(head.rfind(","), head.rfind(" ")) + 1 or MAX_SENTENCE
            else:
                return sentences
            sentence, self._pending = self._pending[:cut].strip(), self._pending[cut:]
            if sentence:
                sentences.append(sentence)

    def flush(self) -> list[str]:
        rest, self._pending = self._pending.strip(), ""
        return [rest] if rest else []


async def sentences(pieces: AsyncIterable[str]) -> AsyncIterator[str]:
    """Whole sentences of ``pieces``, each as soon as it ends."""
    splitter = SentenceSplitter()
    async for piece in pieces:
        for sentence in splitter.feed(piece):
            yield sentence
    for sentence in splitter.flush():
        yield sentence
