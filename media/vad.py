"""Silero VAD on onnxruntime, and the per-call segmenter that turns it into turns.

The model comes from the ``silero-vad`` wheel, installed with ``--no-deps``: its Python
package imports torch at import time, so we never import it; we only locate its data
file. One InferenceSession serves the whole process (``run`` is thread-safe and the
weights are held once); each stream keeps its own recurrent state and context.

The model is fed exactly as the official wrapper (``OnnxWrapper`` in silero-vad 5/6)
feeds it: 512-sample windows at 16 kHz (256 at 8 kHz), each prefixed with the last 64
(32) samples the model saw before, so our probabilities are the reference's. A window
takes about a tenth of a millisecond, so it runs inline on the event loop: a thread hop
would cost more than the inference.
"""

from __future__ import annotations

import importlib.util
import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .audio import SAMPLE_WIDTH

if TYPE_CHECKING:
    import onnxruntime

MODEL_FILE = "silero_vad.onnx"
INSTALL_HINT = "pip install --no-deps silero-vad"
#: Samples per model window, by sample rate (the model's fixed input sizes).
WINDOW = {8000: 256, 16000: 512}
#: Samples of the previous window prepended to each window, by sample rate.
CONTEXT = {8000: 32, 16000: 64}
#: The recurrent state: [2, batch, 128], batch 1 (one stream per SileroVad).
STATE_SHAPE = (2, 1, 128)
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


class SileroVad:
    """Speech probabilities of the consecutive windows of one stream."""

    def __init__(self, sample_rate: int) -> None:
        if sample_rate not in WINDOW:
            raise ValueError(f"Silero VAD runs at 8000 or 16000 Hz, not {sample_rate}")
        self.sample_rate = sample_rate
        #: Samples per window: what ``probability`` and ``skip`` take.
        self.window = WINDOW[sample_rate]
        self._context_size = CONTEXT[sample_rate]
        self._session = session()
        self._sr = np.array(sample_rate, dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next window is scored as the first one."""
        self._state = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros((1, self._context_size), dtype=np.float32)

    def probability(self, window: np.ndarray) -> float:
        """Speech probability of ``window``: float32 samples in [-1, 1], one window long."""
        x = np.concatenate([self._context, self._shape(window)], axis=1)
        output, self._state = self._session.run(None, {"input": x, "state": self._state, "sr": self._sr})
        self._context = x[:, -self._context_size:]
        return float(output[0, 0])

    def skip(self, window: np.ndarray) -> None:
        """Move past ``window`` without scoring it.

        The recurrent state stays as it was; the context becomes this window's tail, so
        the next scored window is prefixed by the audio that really preceded it.
        """
        self._context = self._shape(window)[:, -self._context_size:]

    def _shape(self, window: np.ndarray) -> np.ndarray:
        if window.shape != (self.window,):
            raise ValueError(f"a window is {self.window} samples at {self.sample_rate} Hz, not {window.shape}")
        return window.astype(np.float32, copy=False).reshape(1, -1)


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

    def __init__(self, sample_rate: int, config: VadConfig | None = None) -> None:
        self.config = config or VadConfig()
        self.sample_rate = sample_rate
        self.vad = SileroVad(sample_rate)
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

    def feed(self, pcm: bytes) -> list[VadEvent]:
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
                probability = self.vad.probability(samples / FULL_SCALE)
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
