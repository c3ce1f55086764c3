"""Silero VAD on onnxruntime, and the per-call segmenter that turns it into turns.

The model comes from the ``silero-vad`` wheel, installed with ``--no-deps``: its Python
package imports torch, so we never import it; we only find its data file. One
InferenceSession serves the whole process (it is thread-safe and holds the weights
once); each stream keeps its own recurrent state and context.

The model takes 512-sample windows at 16 kHz (256 at 8 kHz), each prefixed with the last
64 (32) samples of the previous window, exactly as the reference wrapper feeds it, so
our probabilities are the reference's.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .audio import SAMPLE_WIDTH

MODEL_FILE = "silero_vad.onnx"
WINDOW = {8000: 256, 16000: 512}
CONTEXT = {8000: 32, 16000: 64}
STATE_SHAPE = (2, 1, 128)
INSTALL_HINT = "pip install --no-deps silero-vad"

_session = None


def model_path() -> Path:
    """The ONNX file inside the installed silero-vad wheel (found without importing it)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"the Silero VAD model is missing: {INSTALL_HINT}")
    for folder in spec.submodule_search_locations:
        path = Path(folder) / "data" / MODEL_FILE
        if path.is_file():
            return path
    raise RuntimeError(f"the Silero VAD model is missing from the silero-vad package: {INSTALL_HINT}")


def session():  # type: ignore[no-untyped-def]
    """The process's one InferenceSession, made on first use."""
    global _session
    if _session is None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        _session = onnxruntime.InferenceSession(str(model_path()), sess_options=options,
                                                providers=["CPUExecutionProvider"])
    return _session


class SileroVad:
    """Speech probability of consecutive windows of one stream."""

    def __init__(self, sample_rate: int) -> None:
        if sample_rate not in WINDOW:
            raise ValueError(f"Silero VAD runs at 8000 or 16000 Hz, not {sample_rate}")
        self.sample_rate = sample_rate
        self.window = WINDOW[sample_rate]
        self._session = session()
        self._sr = np.array(sample_rate, dtype=np.int64)
        self.reset()

    def reset(self) -> None:
        self._state = np.zeros(STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros((1, CONTEXT[self.sample_rate]), dtype=np.float32)

    def probability(self, window: np.ndarray) -> float:
        """``window``: float32 samples in [-1, 1], exactly one window long."""
        x = np.concatenate([self._context, window.reshape(1, -1).astype(np.float32)], axis=1)
        output, self._state = self._session.run(None, {"input": x, "state": self._state, "sr": self._sr})
        self._context = x[:, -CONTEXT[self.sample_rate]:]
        return float(output[0, 0])


@dataclass(frozen=True)
class VadConfig:
    """Turn-taking settings; also the ``[vad]`` table of trivox.toml."""

    #: Silero speech probability above which a window is speech.
    threshold: float = 0.5
    #: Speech shorter than this is ignored (a click, a cough); also the barge-in delay.
    min_speech_ms: int = 250
    #: Silence that ends an utterance: the endpointing delay.
    min_silence_ms: int = 500
    padding_ms: int = 200
    #: Windows quieter than this are silence without asking the model.
    energy_floor_dbfs: float = -60.0


@dataclass(frozen=True)
class SpeechStart:
    at_ms: float


@dataclass(frozen=True)
class SpeechEnd:
    at_ms: float
    duration_ms: float


VadEvent = SpeechStart | SpeechEnd


class VadSegmenter:
    """Hysteresis over Silero probabilities: speech starts after ``min_speech_ms`` above
    the threshold, ends after ``min_silence_ms`` below ``threshold - 0.15``."""

    def __init__(self, sample_rate: int, config: VadConfig | None = None) -> None:
        self.config = config or VadConfig()
        self.vad = SileroVad(sample_rate)
        self.sample_rate = sample_rate
        self._window_ms = self.vad.window * 1000 / sample_rate
        self._pending = b""
        self._elapsed_ms = 0.0
        self._speaking = False
        self._run_ms = 0.0  # speech (before start) or silence (after start) run length
        self._speech_started_at = 0.0
        self._floor = 32768 * 10 ** (self.config.energy_floor_dbfs / 20)
        self.last_probability = 0.0

    @property
    def speaking(self) -> bool:
        return self._speaking

    def feed(self, pcm: bytes) -> list[VadEvent]:
        """s16le audio of any length; returns the events it completes."""
        self._pending += pcm
        step = self.vad.window * SAMPLE_WIDTH
        events: list[VadEvent] = []
        while len(self._pending) >= step:
            chunk, self._pending = self._pending[:step], self._pending[step:]
            samples = np.frombuffer(chunk, dtype="<i2").astype(np.float32)
            self._elapsed_ms += self._window_ms
            if math.sqrt(float(np.mean(samples * samples))) < self._floor:
                probability = 0.0
            else:
                probability = self.vad.probability(samples / 32768.0)
            self.last_probability = probability
            event = self._step(probability)
            if event is not None:
                events.append(event)
        return events

    def _step(self, probability: float) -> VadEvent | None:
        config = self.config
        if not self._speaking:
            if probability >= config.threshold:
                self._run_ms += self._window_ms
                if self._run_ms >= config.min_speech_ms:
                    self._speaking = True
                    self._speech_started_at = self._elapsed_ms - self._run_ms
                    self._run_ms = 0.0
                    return SpeechStart(self._speech_started_at)
            else:
                self._run_ms = 0.0
            return None
        if probability < config.threshold - 0.15:
            self._run_ms += self._window_ms
            if self._run_ms >= config.min_silence_ms:
                self._speaking = False
                end = self._elapsed_ms - self._run_ms
                self._run_ms = 0.0
                return SpeechEnd(end, end - self._speech_started_at)
        else:
            self._run_ms = 0.0
        return None
