"""eSpeak NG text-to-speech, offline, through the library ``espeakng-loader`` ships.

No system package: the shared library and its voice data come in the wheel and we call
the C API (speak_lib.h) with ctypes. The library is one synthesizer per process and is
not thread-safe, so one lock serialises it, and it is initialised once, on first use.

Streaming is per sentence. eSpeak makes speech some 500 times faster than it plays (a
seven-second sentence in about 12 ms), so each sentence is synthesised whole in one
``trio.to_thread.run_sync`` call and its blocks are yielded before the next sentence is
started. The first audio is out after the first sentence, and between two yields no
thread runs and no lock is held: an async generator that is cancelled, broken out of or
never closed leaves nothing behind, and other calls' sentences interleave with ours
instead of waiting for a whole paragraph. A cancelled consumer abandons the thread and
sets its flag; eSpeak asks our callback after every block, the callback answers 1, and
eSpeak stops within a block.

Splitting at sentence ends costs no prosody: eSpeak shapes intonation per clause, and the
pause it puts between sentences is restored by ``espeakENDPAUSE`` (measured: the same
length to 0.5 ms as the unsplit text).
"""

from __future__ import annotations

import ctypes
import re
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial

import trio

from media.audio import SAMPLE_WIDTH
from media.resample import Resampler

from ..base import ProviderError

# speak_lib.h, API revision 12
AUDIO_OUTPUT_SYNCHRONOUS = 2
#: Without it, eSpeak calls exit() when its data folder is missing: the whole server.
INITIALIZE_DONT_EXIT = 0x8000
ESPEAK_RATE = 1
ESPEAK_PITCH = 3
POS_CHARACTER = 1
CHARS_UTF8 = 1
#: Add the pause of a sentence end after the text (off, the text ends dry).
ENDPAUSE = 0x1000
EE_OK = 0
CALLBACK_CONTINUE = 0
CALLBACK_ABORT = 1

#: espeakRATE_MINIMUM..espeakRATE_MAXIMUM, words per minute.
RATES = range(80, 451)
PITCHES = range(101)
#: Audio per callback: the granularity of yielded chunks and of cancellation.
BLOCK_MS = 60
#: A sentence longer than this is cut at a comma or a space, so text without full stops
#: (an LLM's run-on answer) still streams; 300 characters is about 20 s of speech.
MAX_SEGMENT_CHARS = 300
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n\s*")

_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


@dataclass(frozen=True)
class _Voice:
    name: str
    rate: int
    pitch: int


class _Engine:
    """The process's one eSpeak NG. ``synth`` takes ``lock``; ``select`` needs it held."""

    def __init__(self) -> None:
        try:
            import espeakng_loader

            lib = ctypes.CDLL(espeakng_loader.get_library_path())
        except (ImportError, OSError) as exc:
            raise ProviderError(f"eSpeak NG is not available ({exc}): pip install espeakng-loader") from None
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_Callback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        lib.espeak_Synth.restype = ctypes.c_int
        data = espeakng_loader.get_data_path()
        rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, BLOCK_MS, data.encode(), INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise ProviderError(f"eSpeak NG cannot start with its data at {data}: reinstall espeakng-loader")
        #: The engine's own output rate (22050 Hz).
        self.sample_rate: int = rate
        self.lock = threading.Lock()
        self._lib = lib
        self._selected: _Voice | None = None
        self._blocks: list[bytes] = []
        self._cancel: threading.Event | None = None
        self._callback = _Callback(self._on_audio)  # ctypes must keep it alive: as long as us
        lib.espeak_SetSynthCallback(self._callback)

    def select(self, voice: _Voice) -> None:
        """Make ``voice`` current (a no-op if it already is)."""
        if voice == self._selected:
            return
        self._selected = None
        if self._lib.espeak_SetVoiceByName(voice.name.encode()) != EE_OK:
            raise ProviderError(f"eSpeak NG has no voice {voice.name!r} (try en-us, en, de, fr, or en-us+f3)")
        self._lib.espeak_SetParameter(ESPEAK_RATE, voice.rate, 0)
        self._lib.espeak_SetParameter(ESPEAK_PITCH, voice.pitch, 0)
        self._selected = voice

    def synth(self, text: str, voice: _Voice, cancel: threading.Event, *, pause_after: bool) -> list[bytes]:
        """Blocks of s16 samples (host order: little-endian wherever we run) at ``sample_rate``
        for ``text``; stops early once ``cancel`` is set."""
        with self.lock:
            if cancel.is_set():  # abandoned while it waited for the lock
                return []
            self.select(voice)
            self._blocks, self._cancel = [], cancel
            data = text.encode("utf-8")
            flags = CHARS_UTF8 | (ENDPAUSE if pause_after else 0)
            try:
                status = self._lib.espeak_Synth(data, len(data) + 1, 0, POS_CHARACTER, 0, flags, None, None)
            finally:
                blocks, self._blocks, self._cancel = self._blocks, [], None
        if status != EE_OK and not cancel.is_set():
            raise ProviderError(f"eSpeak NG failed to speak (error {status})")
        return blocks

    def _on_audio(self, wav: ctypes._Pointer[ctypes.c_short], count: int, events: int | None) -> int:
        """eSpeak's callback, on the synthesising thread: keep the block, or stop."""
        if self._cancel is None or self._cancel.is_set():
            return CALLBACK_ABORT
        if wav and count > 0:
            self._blocks.append(ctypes.string_at(wav, count * SAMPLE_WIDTH))
        return CALLBACK_CONTINUE


_engine: _Engine | None = None
_engine_lock = threading.Lock()


def engine() -> _Engine:
    """The process's eSpeak NG, loaded on first use (a few milliseconds)."""
    global _engine
    with _engine_lock:
        if _engine is None:
            _engine = _Engine()
        return _engine


def segments(text: str) -> list[str]:
    """``text`` cut into the pieces synthesised one at a time: sentences, long ones cut."""
    pieces = []
    for sentence in _SENTENCE_END.split(text):
        rest = sentence.strip()
        while len(rest) > MAX_SEGMENT_CHARS:
            head = rest[:MAX_SEGMENT_CHARS]
            comma, space = head.rfind(", "), head.rfind(" ")
            cut = comma + 1 if comma > 0 else space if space > 0 else MAX_SEGMENT_CHARS
            pieces.append(rest[:cut].strip())
            rest = rest[cut:].strip()
        if rest:
            pieces.append(rest)
    return pieces


class EspeakTTS:
    """The TTS protocol on eSpeak NG: ``voice`` is an eSpeak voice name (``en-us``,
    ``en`` for British, ``en-us+f3`` for a variant), ``rate`` words per minute, ``pitch`` 0..100."""

    name = "espeak"

    def __init__(self, voice: str = "en-us", rate: int = 175, pitch: int = 50) -> None:
        if rate not in RATES:
            raise ProviderError(f"eSpeak NG speaks at {RATES.start}..{RATES.stop - 1} words per minute, not {rate}")
        if pitch not in PITCHES:
            raise ProviderError(f"eSpeak NG pitch is 0..100, not {pitch}")
        self._voice = _Voice(voice, rate, pitch)
        synthesizer = engine()
        with synthesizer.lock:
            synthesizer.select(self._voice)  # a bad voice fails here, at start-up

    async def synthesize(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        synthesizer = engine()
        resampler = Resampler(synthesizer.sample_rate, sample_rate)
        pieces = segments(text)
        for index, piece in enumerate(pieces):
            cancel = threading.Event()
            work = partial(synthesizer.synth, piece, self._voice, cancel, pause_after=index < len(pieces) - 1)
            try:
                blocks = await trio.to_thread.run_sync(work, abandon_on_cancel=True)
            finally:
                cancel.set()  # a thread abandoned by cancellation stops at its next block
            for block in blocks:
                pcm = resampler.process(block)
                if pcm:
                    yield pcm
        tail = resampler.flush()
        if tail:
            yield tail

    def render(self, text: str, sample_rate: int) -> bytes:
        """All of ``text`` at once, on the calling thread.

        For test data and prompts made ahead of time; it blocks, so never call it on the
        event loop of a live call.
        """
        synthesizer = engine()
        resampler = Resampler(synthesizer.sample_rate, sample_rate)
        pieces = segments(text)
        running = threading.Event()
        out = bytearray()
        for index, piece in enumerate(pieces):
            for block in synthesizer.synth(piece, self._voice, running, pause_after=index < len(pieces) - 1):
                out += resampler.process(block)
        return bytes(out + resampler.flush())
