"""eSpeak NG text-to-speech, offline, through the library ``espeakng-loader`` ships.

No system package: the shared library and its voice data come in the wheel, and we call
the C API with ctypes. The library is one global synthesizer per process and is not
thread-safe, so one lock serialises synthesis; a sentence takes a few milliseconds.

Synthesis runs on a worker thread in synchronous mode: eSpeak calls our callback with
each block of samples as it makes them, and the callback hands each block to Trio at
once, so the first audio is out before the text is finished. Cancelling the consumer
sets a flag the callback sees, and a callback that returns 1 makes eSpeak stop.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import threading
from collections.abc import AsyncIterator, Callable

import outcome
import trio

from media.resample import Resampler

from ..base import ProviderError

# speak_lib.h
AUDIO_OUTPUT_SYNCHRONOUS = 2
ESPEAK_RATE = 1
ESPEAK_PITCH = 3
POS_CHARACTER = 1
ESPEAK_CHARS_UTF8 = 1
EE_OK = 0
#: Milliseconds of audio per callback: small enough for a fast first chunk.
BUFFER_MS = 100
#: Blocks in flight between the synthesis thread and the consumer.
CHUNK_QUEUE = 64

_Callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _Engine:
    """The process's one eSpeak NG instance."""

    _instance: _Engine | None = None
    _create_lock = threading.Lock()

    def __init__(self) -> None:
        import espeakng_loader

        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self.rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, BUFFER_MS,
                                          espeakng_loader.get_data_path().encode(), 0)
        if self.rate <= 0:
            raise ProviderError("eSpeak NG failed to initialise (espeakng-loader data missing?)")
        self.lib = lib
        self.lock = threading.Lock()
        self._sink: Callable[[bytes], bool] | None = None
        self._callback = _Callback(self._on_audio)  # kept alive as long as the engine
        lib.espeak_SetSynthCallback(self._callback)

    @classmethod
    def get(cls) -> _Engine:
        with cls._create_lock:
            if cls._instance is None:
                cls._instance = _Engine()
            return cls._instance

    def set_voice(self, voice: str, rate: int, pitch: int) -> None:
        """Under ``lock``: select the voice and its parameters."""
        if self.lib.espeak_SetVoiceByName(voice.encode()) != EE_OK:
            raise ProviderError(f"eSpeak NG has no voice {voice!r} (try en-us, en-gb, de, fr, es)")
        self.lib.espeak_SetParameter(ESPEAK_RATE, rate, 0)
        self.lib.espeak_SetParameter(ESPEAK_PITCH, pitch, 0)

    def synth(self, text: str, sink: Callable[[bytes], bool]) -> None:
        """Under ``lock``: synthesise ``text``; ``sink(bytes) -> bool`` (False: stop)."""
        self._sink = sink
        try:
            data = text.encode("utf-8")
            self.lib.espeak_Synth(data, len(data) + 1, 0, POS_CHARACTER, 0, ESPEAK_CHARS_UTF8, None, None)
        finally:
            self._sink = None

    def _on_audio(self, wav, count, events) -> int:  # type: ignore[no-untyped-def]
        sink = self._sink
        if sink is None:
            return 1
        if wav and count > 0 and not sink(ctypes.string_at(wav, count * 2)):
            return 1
        return 0


class EspeakTTS:
    """TTS protocol on eSpeak NG."""

    name = "espeak"

    def __init__(self, voice: str = "en-us", rate: int = 175, pitch: int = 50) -> None:
        self.voice, self.rate, self.pitch = voice, rate, pitch
        engine = _Engine.get()
        with engine.lock:
            engine.set_voice(voice, rate, pitch)  # a bad voice fails here, at start-up

    async def synthesize(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        engine = _Engine.get()
        send, receive = trio.open_memory_channel[bytes](math.inf)
        cancelled = threading.Event()
        failures: list[BaseException] = []
        token = trio.lowlevel.current_trio_token()

        def deliver(block: bytes) -> bool:
            if cancelled.is_set():
                return False
            token.run_sync_soon(send.send_nowait, block)
            return True

        def work() -> None:
            with engine.lock:
                engine.set_voice(self.voice, self.rate, self.pitch)
                engine.synth(text, deliver)

        def done(result: outcome.Outcome[None]) -> None:
            if isinstance(result, outcome.Error):
                failures.append(result.error)
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(send.close)

        # A thread from Trio's cache, not a nursery task: an async generator must not
        # yield from inside a nursery, and the cancel flag already bounds the thread.
        trio.lowlevel.start_thread_soon(work, done)
        resampler = Resampler(engine.rate, sample_rate)
        try:
            async for block in receive:
                out = resampler.process(block)
                if out:
                    yield out
            if failures:
                raise ProviderError(f"eSpeak NG failed: {failures[0]}")
            tail = resampler.flush()
            if tail:
                yield tail
        finally:
            cancelled.set()
