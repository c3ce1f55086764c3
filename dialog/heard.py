"""What the caller heard of an interrupted agent utterance.

The pacer knows how many milliseconds of the utterance were played; the history and
transcript need words. Speech time is taken as proportional to characters within a
sentence, and every cut is moved back to a word boundary, so the history never holds
half a word, or a word the caller did not hear.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Spoken:
    """One sentence of an utterance and how much audio it has made so far."""

    text: str
    ms: float = 0.0
    #: All of its audio was made (else ``ms`` is a lower bound of its length).
    whole: bool = False


def heard_text(spoken: list[Spoken], played_ms: float) -> str:
    """The words of an utterance's sentences the caller heard in ``played_ms``."""
    heard = []
    for part in spoken:
        if played_ms >= part.ms and part.whole:
            heard.append(part.text)
            played_ms -= part.ms
            continue
        # A sentence cut while it was being synthesised is at least as long as what
        # was made of it; the words are assumed spread evenly over that.
        heard.append(heard_prefix(part.text, played_ms, max(part.ms, played_ms)))
        break
    return " ".join(h for h in heard if h)


def heard_prefix(text: str, played_ms: float, total_ms: float) -> str:
    """The words of ``text`` the caller heard when ``played_ms`` of ``total_ms`` played.

    Speech time is assumed proportional to characters, and the cut is moved back to a
    word boundary so the history never holds half a word the caller did not hear.
    """
    if total_ms <= 0 or played_ms <= 0:
        return ""
    if played_ms >= total_ms:
        return text
    cut = int(len(text) * played_ms / total_ms)
    head = text[:cut]
    if cut < len(text) and not text[cut].isspace():
        head = head.rsplit(" ", 1)[0] if " " in head else ""
    return head.rstrip()
