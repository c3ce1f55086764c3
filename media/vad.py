"""Silero VAD on onnxruntime, and the per-call segmenter that turns it into turns.

The model comes from the ``silero-vad`` wheel, installed with ``--no-deps``: its Python
package imports torch at import time, so we never import it; we only locate its data
file. One InferenceSession serves the whole process (``run`` is thread-safe and the
weights are held once); each stream keeps its own recurrent state and context.

The model is fed exactly as the official wrapper (``OnnxWrapper`` in silero-vad 5/6)
feeds it: 512-sample windows at 16 kHz (256 at 8 kHz), each prefixed with the last 64
(32) samples the model saw before, so our probabilities are the reference's.

A window costs about 0.2 ms of CPU alone, but a batch of 40 windows only about 45 us
each (measured on onnxruntime 1.2x, 8 kHz), and a server with hundreds of calls scores
thousands of windows a second. So calls do not run the model themselves: each asks the
process's :class:`VadBatcher` to score its window, and the batcher runs every window that
is due as one batch, either when every call has one waiting or at its next 20 ms tick.
Each stream keeps its own state and context; only the model run is shared. Inference
stays inline on the event loop: a thread hop would cost more than the batch.
"""

from __future__ import annotations

import importlib.util
import math
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np
import trio

from .audio import SAMPLE_WIDTH

if TYPE_CHECKING:
    import onnxruntime

MODEL_FILE = "silero_vad.onnx"
INSTALL_HINT = "pip install --no-deps silero-vad"
#: Samples per model window, by sample rate (the model's fixed input sizes).
WINDOW = {8000: 256, 16000: 512}
#: Samples of the previous window prepended to each window, by sample rate.
CONTEXT = {8000: 32, 16000: 64}
#: The recurrent state of one stream: [2, batch, 128] with batch 1.
STATE_SHAPE = (2, 1, 128)
#: The batcher's tick: the media clock's 20 ms, so that a server can run the batches
#: half a tick after the calls' sends, where they delay no packet.
BATCH_INTERVAL = 0.020
#: Leaving speech needs the probability this far below the threshold (Silero's default
#: hysteresis), so a word that dips to 0.45 inside a sentence does not end the turn.
HYSTERESIS = 0.15
FULL_SCALE = 32768.0
_WIRE_DTYPE = np.dtype("<i2")

_session: onnxruntime.InferenceSession | None = None
_session_lock = threading.Lock()


def model_path() -> Path:
    """The ONNX file inside the installed silero-vad wheel, found without importing it."""
    spec = importlib.util.find_spec("silero_vad")  # a top-level name: nothing is imported
    folders = spec.submodule_search_locations if spec is not None else None
    for folder in folders or ():
        path = Path(folder) / "data" / MODEL_FILE
        if path.is_file():
            return path
    raise RuntimeError(f"the Silero VAD model is not installed: {INSTALL_HINT}")


def session() -> onnxruntime.InferenceSession:
    """The process's one InferenceSession, loaded on first use.

    One thread per session: a window is far too small to split across cores, and a
    telephony server runs many calls, each wanting a core of its own.
    """
    global _session
    with _session_lock:
        if _session is None:
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            _session = onnxruntime.InferenceSession(
                str(model_path()), sess_options=options, providers=["CPUExecutionProvider"]
            )
        return _session


class _Stream:
    """One stream's side of the model: its recurrent state and the context samples
    prepended to each window, as the reference wrapper keeps them."""

    def __init__(self, sample_rate: int) -> None:
        if sample_rate not in WINDOW:
            raise ValueError(f"Silero VAD runs at 8000 or 16000 Hz, not {sample_rate}")
        self.sample_rate = sample_rate
        #: Samples per window: what ``probability`` and ``skip`` take.
        self.window = WINDOW[sample_rate]
        self._context_size = CONTEXT[sample_rate]
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next window is scored as the first one."""
        self._state = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros((1, self._context_size), dtype=np.float32)

    def skip(self, window: np.ndarray) -> None:
        """Move past ``window`` without scoring it.

        The recurrent state stays as it was; the context becomes this window's tail, so
        the next scored window is prefixed by the audio that really preceded it.
        """
        self._context = self._shape(window)[:, -self._context_size:]

    def _input(self, window: np.ndarray) -> np.ndarray:
        """The model input for ``window``: the context, then the window."""
        return np.concatenate([self._context, self._shape(window)], axis=1)

    def _advance(self, x: np.ndarray, state: np.ndarray) -> None:
        """Keep what the model run on ``x`` leaves for the next window."""
        self._state = state
        self._context = x[:, -self._context_size:]

    def _shape(self, window: np.ndarray) -> np.ndarray:
        if window.shape != (self.window,):
            raise ValueError(f"a window is {self.window} samples at {self.sample_rate} Hz, not {window.shape}")
        return window.astype(np.float32, copy=False).reshape(1, -1)


class SileroVad(_Stream):
    """Speech probabilities of the consecutive windows of one stream, one model run each:
    the unbatched reference, and the scorer when no batcher runs."""

    def __init__(self, sample_rate: int) -> None:
        super().__init__(sample_rate)
        self._session = session()
        self._sr = np.array(sample_rate, dtype=np.int64)

    def probability(self, window: np.ndarray) -> float:
        """Speech probability of ``window``: float32 samples in [-1, 1], one window long."""
        x = self._input(window)
        output, state = self._session.run(None, {"input": x, "state": self._state, "sr": self._sr})
        self._advance(x, state)
        return float(output[0, 0])

    async def score(self, window: np.ndarray) -> float:
        """:meth:`probability`, as a :class:`Scorer`."""
        return self.probability(window)


class Scorer(Protocol):
    """What :class:`VadSegmenter` needs of a model: scores and skips, window by window."""

    window: int

    async def score(self, window: np.ndarray) -> float:
        """Speech probability of the stream's next window."""

    def skip(self, window: np.ndarray) -> None:
        """Move past the stream's next window without scoring it."""


@dataclass
class _Request:
    stream: BatchedVad
    x: np.ndarray
    done: trio.Event = field(default_factory=trio.Event)
    probability: float = 0.0


class VadBatcher:
    """Scores the due windows of all calls' streams in one model run per sample rate.

    A batch runs as soon as every open stream has a window waiting (nobody else is
    coming), else at the next tick of :meth:`run`, so a window waits at most one tick
    (20 ms). Without a running batcher, each window is scored at once, alone.
    """

    def __init__(self, interval: float = BATCH_INTERVAL) -> None:
        self.interval = interval
        self._pending: list[_Request] = []
        self._open = 0
        self._running = False
        #: Windows scored and model runs made: batch size = windows / runs.
        self.windows = 0
        self.runs = 0

    def stream(self, sample_rate: int) -> BatchedVad:
        """A new stream's scorer; close it when the stream ends."""
        self._open += 1
        return BatchedVad(self, sample_rate)

    def release(self) -> None:
        """A stream closed: batches no longer wait for its windows."""
        self._open -= 1

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Tick until cancelled, running whatever is due."""
        self._running = True
        task_status.started()
        try:
            deadline = trio.current_time()
            while True:
                deadline += self.interval
                await trio.sleep_until(deadline)
                await self._flush()
        finally:
            self._running = False
            self._score(self._take())  # nobody will tick again: answer the waiting windows now

    async def score(self, stream: BatchedVad, x: np.ndarray) -> float:
        request = _Request(stream, x)
        self._pending.append(request)
        if not self._running:
            self._score(self._take())
        elif len(self._pending) >= self._open:
            await self._flush()
        await request.done.wait()
        return request.probability

    async def _flush(self) -> None:
        """Run every waiting window in a worker thread. onnxruntime lets go of the GIL
        while it runs, so the event loop goes on meanwhile: a batch of hundreds of windows
        takes milliseconds, which must not delay the calls' packets. The run is not
        cancelled halfway: the windows of other calls ride on it."""
        batches = self._take()
        if batches:
            results = await trio.to_thread.run_sync(_infer, batches)
            self._deliver(batches, results)

    def _take(self) -> dict[int, list[_Request]]:
        pending, self._pending = self._pending, []
        by_rate: dict[int, list[_Request]] = defaultdict(list)
        for request in pending:
            by_rate[request.stream.sample_rate].append(request)
        return by_rate

    def _score(self, batches: dict[int, list[_Request]]) -> None:
        """Run ``batches`` here and now (no batcher task: nothing else is waiting)."""
        if batches:
            self._deliver(batches, _infer(batches))

    def _deliver(self, batches: dict[int, list[_Request]],
                 results: dict[int, tuple[np.ndarray, np.ndarray]]) -> None:
        for rate, requests in batches.items():
            output, states = results[rate]
            self.runs += 1
            self.windows += len(requests)
            for i, request in enumerate(requests):
                request.stream.finish(request.x, states[:, i:i + 1])
                request.probability = float(output[i, 0])
                request.done.set()


def _infer(batches: dict[int, list[_Request]]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """One model run per sample rate: (probabilities, new states) of each batch."""
    results = {}
    for rate, requests in batches.items():
        x = np.concatenate([r.x for r in requests], axis=0)
        state = np.concatenate([r.stream.state for r in requests], axis=1)
        output, states = session().run(None, {"input": x, "state": state, "sr": np.array(rate, dtype=np.int64)})
        results[rate] = (output, states)
    return results


class BatchedVad(_Stream):
    """One stream whose windows the :class:`VadBatcher` scores together with others'."""

    def __init__(self, batcher: VadBatcher, sample_rate: int) -> None:
        super().__init__(sample_rate)
        self._batcher = batcher
        self._closed = False

    @property
    def state(self) -> np.ndarray:
        return self._state

    async def score(self, window: np.ndarray) -> float:
        return await self._batcher.score(self, self._input(window))

    def finish(self, x: np.ndarray, state: np.ndarray) -> None:
        """The batch ran: keep this stream's share of its result."""
        self._advance(x, state.copy())

    def close(self) -> None:
        """The stream ended: the batcher stops waiting for its windows."""
        if not self._closed:
            self._closed = True
            self._batcher.release()


@dataclass(frozen=True)
class VadConfig:
    """Turn-taking settings; also the ``[vad]`` table of trivox.toml."""

    #: Silero speech probability at or above which a window is speech.
    threshold: float = 0.5
    #: Speech must last this long to be a turn (not a click or a cough); it is also how
    #: late SpeechStart (and so barge-in) comes after the speech began.
    min_speech_ms: int = 250
    #: Silence that ends a turn: the endpointing delay.
    min_silence_ms: int = 500
    #: Audio the caller keeps on each side of the speech (Silero's ``speech_pad_ms``).
    padding_ms: int = 200
    #: Windows quieter than this (RMS, dBFS) are silence without asking the model.
    energy_floor_dbfs: float = -60.0

    @property
    def neg_threshold(self) -> float:
        """Probability below which speech counts as paused (hysteresis)."""
        return self.threshold - HYSTERESIS


@dataclass(frozen=True)
class SpeechStart:
    """Speech began at ``at_ms`` (stream time); reported ``min_speech_ms`` later."""

    at_ms: float


@dataclass(frozen=True)
class SpeechEnd:
    """Speech that lasted ``duration_ms`` stopped at ``at_ms``; reported ``min_silence_ms`` later."""

    at_ms: float
    duration_ms: float


VadEvent = SpeechStart | SpeechEnd


class VadSegmenter:
    """One call's turns: audio in, SpeechStart / SpeechEnd out.

    Times are milliseconds of audio fed so far. The rules, in window steps:

    1. Outside speech, a window at or above ``threshold`` opens a candidate; the
       candidate survives windows down to ``neg_threshold`` and dies below it. Once it
       has lasted ``min_speech_ms``, SpeechStart is reported with the candidate's start.
    2. In speech, a window below ``neg_threshold`` starts a silence; only a window back at
       ``threshold`` cancels it. Once the silence has lasted ``min_silence_ms``,
       SpeechEnd is reported with the silence's start.
    3. A window whose RMS is under ``energy_floor_dbfs`` scores 0 without running the
       model (obvious silence); the model's state is kept, not reset.
    """

    def __init__(self, sample_rate: int, config: VadConfig | None = None, scorer: Scorer | None = None) -> None:
        """``scorer``: the stream's model side, from a :class:`VadBatcher`; by default an
        unbatched :class:`SileroVad` of its own."""
        self.config = config or VadConfig()
        self.sample_rate = sample_rate
        self.vad: Scorer = scorer or SileroVad(sample_rate)
        self._window_bytes = self.vad.window * SAMPLE_WIDTH
        self._window_ms = self.vad.window * 1000 / sample_rate
        self._floor = FULL_SCALE * 10 ** (self.config.energy_floor_dbfs / 20)
        self._pending = bytearray()
        self._now_ms = 0.0  # end of the last window scored
        self._speaking = False
        self._candidate_ms: float | None = None  # start of a speech run not yet reported
        self._silence_ms: float | None = None  # start of a pause inside speech
        self._start_ms = 0.0

    @property
    def speaking(self) -> bool:
        """Between a SpeechStart and its SpeechEnd."""
        return self._speaking

    @property
    def pre_roll_ms(self) -> float:
        """Audio a caller must keep to hand the whole turn, padding included, to an ASR.

        SpeechStart arrives ``min_speech_ms`` (rounded up to whole windows) after the
        speech began, and the turn should start ``padding_ms`` before that.
        """
        windows = math.ceil(self.config.min_speech_ms / self._window_ms) + 1
        return self.config.padding_ms + windows * self._window_ms

    async def feed(self, pcm: bytes) -> list[VadEvent]:
        """s16le audio of any length; returns the events the completed windows cause."""
        self._pending += pcm
        events: list[VadEvent] = []
        whole = len(self._pending) - len(self._pending) % self._window_bytes
        for offset in range(0, whole, self._window_bytes):
            chunk = self._pending[offset:offset + self._window_bytes]
            samples = np.frombuffer(chunk, dtype=_WIRE_DTYPE).astype(np.float32)
            start_ms, self._now_ms = self._now_ms, self._now_ms + self._window_ms
            if math.sqrt(float(np.mean(samples * samples))) < self._floor:
                self.vad.skip(samples / FULL_SCALE)
                probability = 0.0
            else:
                probability = await self.vad.score(samples / FULL_SCALE)
            event = self._step(probability, start_ms)
            if event is not None:
                events.append(event)
        del self._pending[:whole]
        return events

    def _step(self, probability: float, start_ms: float) -> VadEvent | None:
        config = self.config
        if not self._speaking:
            if self._candidate_ms is None:
                if probability >= config.threshold:
                    self._candidate_ms = start_ms
            elif probability < config.neg_threshold:
                self._candidate_ms = None
            if self._candidate_ms is not None and self._now_ms - self._candidate_ms >= config.min_speech_ms:
                self._speaking, self._start_ms, self._candidate_ms = True, self._candidate_ms, None
                return SpeechStart(self._start_ms)
            return None
        if probability >= config.threshold:
            self._silence_ms = None
        elif probability < config.neg_threshold and self._silence_ms is None:
            self._silence_ms = start_ms
        if self._silence_ms is not None and self._now_ms - self._silence_ms >= config.min_silence_ms:
            end, self._silence_ms, self._speaking = self._silence_ms, None, False
            return SpeechEnd(end, end - self._start_ms)
        return None
