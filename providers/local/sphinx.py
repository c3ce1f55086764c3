"""pocketsphinx speech recognition, offline; its US English model ships in the wheel.

A Decoder takes about 0.3 s to load, too long to make one per utterance, so decoders
are pooled: a stream borrows one and gives it back when it closes. Audio is resampled
to the model's 16 kHz by a stateful soxr stream and fed to the decoder on a worker
thread in batches, so the event loop never waits on the search.
"""

from __future__ import annotations

import threading

import trio

from media.resample import Resampler

from ..base import ProviderError, Transcript

MODEL_RATE = 16000
#: Bytes of 16 kHz audio per thread hop: 200 ms, small next to the utterance.
BATCH_BYTES = MODEL_RATE * 2 // 5


class _DecoderPool:
    """Idle decoders, shared by every stream of the process."""

    def __init__(self) -> None:
        self._idle: list[object] = []
        self._lock = threading.Lock()

    def take(self) -> object:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        try:
            from pocketsphinx import Decoder

            return Decoder(samprate=MODEL_RATE, loglevel="FATAL")
        except (ImportError, RuntimeError) as exc:
            raise ProviderError(f"pocketsphinx cannot load its model: {exc}") from None

    def give(self, decoder: object) -> None:
        with self._lock:
            self._idle.append(decoder)


_POOL = _DecoderPool()


class SphinxStream:
    """One utterance on one borrowed decoder."""

    def __init__(self, decoder, sample_rate: int) -> None:  # type: ignore[no-untyped-def]
        self._decoder = decoder
        self._resampler = Resampler(sample_rate, MODEL_RATE)
        self._buffer = bytearray()
        self._lock = trio.Lock()  # one thread hop at a time: the decoder is not reentrant
        self._closed = False

    async def send_audio(self, pcm: bytes) -> None:
        self._buffer += self._resampler.process(pcm)
        if len(self._buffer) >= BATCH_BYTES:
            await self._feed(final=False)

    async def finish(self) -> Transcript:
        self._buffer += self._resampler.flush()
        await self._feed(final=True)
        hypothesis = self._decoder.hyp()
        return Transcript(hypothesis.hypstr if hypothesis is not None else "", final=True)

    async def _feed(self, *, final: bool) -> None:
        data, self._buffer = bytes(self._buffer), bytearray()
        decoder = self._decoder

        def work() -> None:
            if data:
                decoder.process_raw(data, False, False)
            if final:
                decoder.end_utt()

        async with self._lock:
            await trio.to_thread.run_sync(work)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        async with self._lock:  # wait for a batch in flight before the decoder is reused
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(self._reset)
        _POOL.give(self._decoder)

    def _reset(self) -> None:
        try:
            self._decoder.end_utt()
        except RuntimeError:
            pass  # already ended by finish()


class SphinxASR:
    """ASR protocol on pocketsphinx."""

    name = "pocketsphinx"

    def __init__(self) -> None:
        # Load one decoder now, at start-up: the first caller must not wait 0.3 s for it.
        _POOL.give(_POOL.take())

    async def open_stream(self, sample_rate: int) -> SphinxStream:
        decoder = await trio.to_thread.run_sync(_POOL.take)
        decoder.start_utt()  # type: ignore[attr-defined]
        return SphinxStream(decoder, sample_rate)
