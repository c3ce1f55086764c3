"""pocketsphinx speech recognition, offline; its US English model ships in the wheel.

What was measured (pocketsphinx 5.1.1, one x86-64 core) and what it decided:

- A Decoder takes about 0.3 s and 90 MB to load: every one reads its own acoustic model
  and 27 MB language model. So the configuration is made once per process and decoders
  are pooled; a stream borrows one and gives it back, and at most ``MAX_IDLE`` wait.
- The Cython binding never releases the GIL, so a worker thread does not by itself
  spare the event loop: ``process_raw`` holds the GIL as long as it searches (real-time
  factor 0.2 at 16 kHz). Audio therefore crosses to the worker thread in 200 ms batches
  (few hops) but is fed in 20 ms slices, and the thread yields the GIL after each: while
  a stream decodes, the event loop now waits 4-6 ms typically and 30 ms at worst, where
  one ``process_raw`` per batch plus the end-of-utterance passes froze it for 600 ms.
- The end-of-utterance passes hold the GIL over the whole utterance, freezing every call
  in the process. The flat-lexicon pass took 0.2-0.6 s and found no more words on our
  test speech. The lattice best path found a tenth more words at 16 kHz and hardly any
  at 8 kHz, and costs more than linearly: 28 ms after 3 s of speech, 280 ms after 13 s.
  Both are off; ``end_utt`` then takes 3-25 ms whatever the length.
- The cepstral mean used during an utterance is the one pocketsphinx estimated at the
  end of the decoder's earlier utterances. A fresh decoder starts from a wideband-
  microphone default far from band-limited telephone audio, and recognised eSpeak
  sentences at 8 kHz with a third of the words it got once warm (it takes two or three
  utterances to converge). A pooled decoder keeps its estimate; a stream prefers one
  that last heard audio at its own sample rate; and a decoder new to a rate starts from
  the mean last learned at that rate, so a server that grows its pool under load does
  not hand its next caller a cold decoder.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from functools import partial
from typing import TYPE_CHECKING, TypeVar

import trio

from media.resample import Resampler

from ..base import ProviderError, Transcript

if TYPE_CHECKING:
    from pocketsphinx import Config, Decoder

MODEL_RATE = 16000
#: The one configuration of the process (fwdflat and bestpath: see above).
DECODER_OPTIONS: dict[str, object] = {
    "samprate": MODEL_RATE,
    "loglevel": "FATAL",
    "fwdflat": False,
    "bestpath": False,
}
#: 16 kHz audio per thread hop: 200 ms.
BATCH_BYTES = MODEL_RATE * 2 // 5
#: 16 kHz audio per ``process_raw`` call, the longest the event loop waits: 20 ms.
SLICE_BYTES = MODEL_RATE * 2 // 50
#: Idle decoders kept; more are dropped (90 MB each).
MAX_IDLE = 4
#: Pool tag of a decoder that has heard nothing yet.
UNUSED = 0

T = TypeVar("T")


class _DecoderPool:
    """The process's idle decoders, each tagged with the input rate it last heard, and
    the cepstral mean last learned at each rate."""

    def __init__(self) -> None:
        self._idle: list[tuple[int, Decoder]] = []
        self._means: dict[int, str] = {}
        self._lock = threading.Lock()
        self._config: Config | None = None

    def take(self, sample_rate: int) -> Decoder:
        """A decoder for a stream at ``sample_rate``; blocks 0.3 s if one must be loaded."""
        with self._lock:
            mean = self._means.get(sample_rate)
            if self._idle:
                same = [i for i, (rate, _) in enumerate(self._idle) if rate == sample_rate]
                rate, decoder = self._idle.pop(same[-1] if same else -1)
                if rate != sample_rate and mean is not None:
                    decoder.set_cmn(mean)
                return decoder
            if self._config is None:
                self._config = self._load_config()
            config = self._config
        try:
            from pocketsphinx import Decoder

            decoder = Decoder(config)
        except (RuntimeError, ValueError) as exc:
            raise ProviderError(f"pocketsphinx cannot load its model ({exc}): reinstall pocketsphinx") from None
        if mean is not None:
            decoder.set_cmn(mean)
        return decoder

    def preload(self) -> None:
        """Make sure one decoder is loaded and idle (blocks 0.3 s if none is)."""
        with self._lock:
            if self._idle:
                return
        self.give(UNUSED, self.take(UNUSED))

    def give(self, sample_rate: int, decoder: Decoder) -> None:
        """Return a decoder that is not inside an utterance."""
        with self._lock:
            if sample_rate != UNUSED:
                self._means[sample_rate] = decoder.get_cmn(False)
            self._idle.append((sample_rate, decoder))
            del self._idle[:-MAX_IDLE]

    @staticmethod
    def _load_config() -> Config:
        try:
            from pocketsphinx import Config
        except ImportError:
            raise ProviderError("pocketsphinx is not installed: pip install pocketsphinx") from None
        return Config(**DECODER_OPTIONS)


_POOL = _DecoderPool()


def _process(decoder: Decoder, data: bytes) -> None:
    """Worker thread: search ``data`` a slice at a time, letting the event loop in between."""
    for offset in range(0, len(data), SLICE_BYTES):
        decoder.process_raw(data[offset:offset + SLICE_BYTES], False, False)
        time.sleep(0)  # hand the GIL to the event loop now, not at the next switch interval


def _end(decoder: Decoder, data: bytes) -> str:
    """Worker thread: the last audio, the end of the utterance, and its best hypothesis."""
    _process(decoder, data)
    decoder.end_utt()
    hypothesis = decoder.hyp()
    return hypothesis.hypstr if hypothesis is not None else ""


class SphinxStream:
    """One utterance on one borrowed decoder. A single task feeds it."""

    def __init__(self, decoder: Decoder, sample_rate: int) -> None:
        self._decoder: Decoder | None = decoder
        self._sample_rate = sample_rate
        self._resampler = Resampler(sample_rate, MODEL_RATE)
        self._buffer = bytearray()
        self._lock = trio.Lock()  # one hop at a time: a decoder is not reentrant
        self._finishing = False

    async def send_audio(self, pcm: bytes) -> None:
        self._check_open()
        self._buffer += self._resampler.process(pcm)
        if len(self._buffer) >= BATCH_BYTES:
            async with self._lock:
                await self._hop(_process)

    async def finish(self) -> Transcript:
        """End the utterance: the final transcript (empty if nothing was recognised)."""
        self._check_open()
        self._finishing = True
        self._buffer += self._resampler.flush()
        async with self._lock:
            text = await self._hop(_end)
            self._release()
        return Transcript(text, final=True)

    async def aclose(self) -> None:
        """Give the decoder back, ending the utterance if need be; idempotent."""
        with trio.CancelScope(shield=True):  # bounded: at most one hop and an end_utt
            async with self._lock:
                if self._decoder is None:  # finished, failed or closed already
                    return
                try:
                    await trio.to_thread.run_sync(self._decoder.end_utt)
                except RuntimeError:
                    self._decoder = None  # in an unknown state: not pooled
                    return
                self._release()

    async def _hop(self, work: Callable[[Decoder, bytes], T]) -> T:
        """Run ``work`` on the buffered audio in a worker thread (under ``_lock``).

        Not abandoned on cancellation: the thread would go on using the decoder after it
        went back to the pool. The wait is one batch, tens of milliseconds. A decoder that
        fails is in an unknown state and is dropped, not pooled.
        """
        if self._decoder is None:
            raise trio.ClosedResourceError("this recognition stream is closed")
        data, self._buffer = bytes(self._buffer), bytearray()
        try:
            return await trio.to_thread.run_sync(partial(work, self._decoder, data))
        except RuntimeError as exc:
            self._decoder = None
            raise ProviderError(f"pocketsphinx failed: {exc}") from None

    def _check_open(self) -> None:
        if self._decoder is None or self._finishing:
            raise trio.ClosedResourceError("this recognition stream is finished or closed")

    def _release(self) -> None:
        if self._decoder is not None:
            _POOL.give(self._sample_rate, self._decoder)
            self._decoder = None


class SphinxASR:
    """The ASR protocol on pocketsphinx's US English model.

    For a menu, the recogniser can be told what to expect instead of open English:
    ``keywords`` accepts exactly one of those words or phrases (the caller was asked to
    say one), and ``grammar`` (a JSGF file) accepts only the sentences it describes
    ("[I would like] (sales | support) [please]"). Keyword *spotting* in free speech
    (pocketsphinx's kws search) was tried and left out: on telephone-band speech it
    either missed the words or heard them everywhere, whatever the threshold. Either is a search of its own, added to each pooled decoder
    the first time this recogniser borrows it, and made current for each utterance, so
    recognisers with different searches can share the pool.
    """

    name = "pocketsphinx"

    def __init__(self, keywords: Sequence[str] = (), grammar: str = "") -> None:
        if keywords and grammar:
            raise ProviderError("pocketsphinx takes keywords or a grammar, not both")
        self._search = DEFAULT_SEARCH
        self._add_search: Callable[[Decoder], None] | None = None
        text = ""
        if grammar:
            try:
                text = Path(grammar).read_text()
            except OSError as exc:
                raise ProviderError(f"cannot read the JSGF grammar {grammar}: {exc.strerror}") from None
        elif keywords:
            text = keyword_grammar([" ".join(keyword.lower().split()) for keyword in keywords])
        if text:
            self._search = f"jsgf-{_digest(text)}"
            self._add_search = partial(_add_grammar, self._search, text)
        # Load a decoder now, at start-up: a missing model or a bad grammar or keyword
        # fails here, and the first caller does not wait 0.3 s (event loop frozen) for it.
        _POOL.preload()
        decoder = _POOL.take(UNUSED)
        try:
            self._prepare(decoder)
        finally:
            _POOL.give(UNUSED, decoder)

    async def open_stream(self, sample_rate: int) -> SphinxStream:
        if sample_rate <= 0:
            raise ValueError(f"sample rate must be positive, not {sample_rate}")
        decoder = await trio.to_thread.run_sync(_POOL.take, sample_rate)
        try:
            await trio.to_thread.run_sync(self._prepare, decoder)
        except ProviderError:
            _POOL.give(UNUSED, decoder)
            raise
        decoder.start_utt()  # 0.1 ms
        return SphinxStream(decoder, sample_rate)

    def _prepare(self, decoder: Decoder) -> None:
        """Make our search the decoder's current one, adding it the first time."""
        try:
            decoder.activate_search(self._search)
        except KeyError:  # a decoder this recogniser has not borrowed before
            assert self._add_search is not None  # the default search always exists
            self._add_search(decoder)
            decoder.activate_search(self._search)


#: pocketsphinx's name for its language-model search (open English).
DEFAULT_SEARCH = "_default"


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _grammar_words(text: str) -> set[str]:
    """The words a JSGF grammar's rules use (pocketsphinx would silently drop a rule
    with a word it cannot pronounce): rule names, tags, weights and comments aside."""
    body = "\n".join(line for line in re.sub(r"/\*.*?\*/|//[^\n]*", "", text, flags=re.S).splitlines()
                     if not line.strip().startswith(("#JSGF", "grammar", "import")))
    body = re.sub(r"<[^>]*>|\{[^}]*\}|/[^/]*/|\bpublic\b", " ", body)
    return set(re.findall(r"[a-z']+", body.lower()))


def _add_grammar(name: str, text: str, decoder: Decoder) -> None:
    unknown = [word for word in _grammar_words(text) if decoder.lookup_word(word) is None]
    if unknown:
        raise ProviderError(f"pocketsphinx's dictionary has no word {unknown[0]!r}: spell it as plain English words")
    try:
        decoder.add_jsgf_string(name, text)
    except (RuntimeError, ValueError) as exc:
        raise ProviderError(f"pocketsphinx cannot use the JSGF grammar: {exc}") from None


def keyword_grammar(phrases: list[str]) -> str:
    """A JSGF grammar that accepts exactly one of ``phrases``."""
    alternatives = " | ".join(phrases)
    return f"#JSGF V1.0;\ngrammar keywords;\npublic <keyword> = {alternatives};\n"
