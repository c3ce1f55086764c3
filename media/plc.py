"""Packet loss concealment: what the caller's audio sounds like where a packet is missing.

Playing zeros for a lost 20 ms frame is a click twice over (the waveform drops to zero and
jumps back), and callers hear it as a broken line; ASR hears it as a consonant. This is
the pitch-repetition scheme of ITU-T G.711 Appendix I, simplified:

- at the first missing sample, find the pitch period of the last good audio by
  normalised autocorrelation (66-200 Hz, the range of a speaking voice) and keep
  repeating the last period, so voiced speech goes on smoothly instead of stopping;
- the period's end is overlap-added with the audio before it, so each repetition joins
  the next without a step;
- after 10 ms the repetition fades, 20% per 10 ms, reaching silence at 60 ms: a longer
  buzz of one repeated period sounds worse than a gap;
- when real audio returns, the first 4 ms (more after a long loss) cross-fade from the
  synthetic signal into it.

Sans-IO and sample-based; the jitter buffer calls :meth:`Concealer.good` with every
sample it plays and :meth:`Concealer.conceal` for every sample it has to invent.
"""

from __future__ import annotations

import numpy as np

#: Pitch search range, in Hz (G.711 Appendix I: 66-200 Hz).
MIN_PITCH_HZ = 66
MAX_PITCH_HZ = 200
#: Concealment at full level before the fade starts, and the fade's length.
HOLD_MS = 10
FADE_MS = 50
#: Cross-fade into real audio after a loss: this long, plus a step per 10 ms lost.
RECOVER_MS = 4
RECOVER_STEP_MS = 4
MAX_RECOVER_MS = 10


class Concealer:
    """Conceals the gaps of one mono stream at ``rate`` Hz (int16 samples)."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._min_lag = rate // MAX_PITCH_HZ
        self._max_lag = rate // MIN_PITCH_HZ
        self._history = np.zeros(3 * self._max_lag, dtype=np.int16)
        # Good audio not yet merged into _history (s16le bytes, oldest first): a frame
        # played as it came costs a list append, and is converted only when a loss needs it.
        self._recent: list[bytes] = []
        self._recent_bytes = 0
        self._cycle: np.ndarray | None = None  # the repeated period, while concealing
        self._phase = 0  # next sample of the cycle
        self._lost = 0  # samples concealed since the last good one
        self._hold = rate * HOLD_MS // 1000
        self._fade = rate * FADE_MS // 1000

    @property
    def concealing(self) -> bool:
        """Inside a gap: the next good samples will be cross-faded in."""
        return self._cycle is not None

    @property
    def exhausted(self) -> bool:
        """The concealment has faded to silence: a gap this long is an underrun, not a loss."""
        return self._lost >= self._hold + self._fade

    def good_pcm(self, pcm: bytes) -> None:
        """Real audio (s16le bytes) played as it is, outside a gap: the jitter buffer's
        fast path for a frame that needs no cross-fade (``concealing`` is False)."""
        self._recent.append(pcm)
        self._recent_bytes += len(pcm)
        keep = 2 * len(self._history)
        while self._recent_bytes - len(self._recent[0]) >= keep:
            self._recent_bytes -= len(self._recent.pop(0))

    def good(self, samples: np.ndarray) -> np.ndarray:
        """Real audio (int16); returned as it should be played (cross-faded after a gap)."""
        if self._cycle is None:
            self._remember(samples)
            return samples
        out = samples.astype(np.float32)
        steps = min(self._lost // (self.rate // 100), (MAX_RECOVER_MS - RECOVER_MS) // RECOVER_STEP_MS)
        length = min(len(out), self.rate * (RECOVER_MS + steps * RECOVER_STEP_MS) // 1000)
        if length:
            synthetic = self._synthesise(length)
            ramp = np.linspace(0.0, 1.0, length, endpoint=False, dtype=np.float32)
            out[:length] = synthetic * (1 - ramp) + out[:length] * ramp
        self._cycle, self._lost = None, 0
        played = _to_int16(out)
        self._remember(played)
        return played

    def conceal(self, count: int) -> np.ndarray:
        """``count`` invented samples (int16) continuing the stream."""
        if self._cycle is None:
            self._cycle = self._period()
            self._phase = 0
        out = _to_int16(self._synthesise(count))
        self._remember(out)
        return out

    def _synthesise(self, count: int) -> np.ndarray:
        """The next ``count`` samples of the repeated period, with the fade applied."""
        assert self._cycle is not None
        cycle = self._cycle
        index = (self._phase + np.arange(count)) % len(cycle)
        self._phase = int((self._phase + count) % len(cycle))
        position = self._lost + np.arange(count, dtype=np.float32)
        gain = np.clip(1.0 - (position - self._hold) / self._fade, 0.0, 1.0)
        self._lost += count
        return cycle[index] * gain

    def _merge_recent(self) -> None:
        if self._recent:
            recent = np.frombuffer(b"".join(self._recent), dtype="<i2").astype(np.int16)
            self._recent.clear()
            self._recent_bytes = 0
            self._remember(recent)

    def _period(self) -> np.ndarray:
        """One pitch period of the last good audio, its end blended into its start."""
        self._merge_recent()
        history = self._history.astype(np.float32)
        lag = self._pitch(history)
        cycle = history[-lag:].copy()
        overlap = lag // 4
        if overlap:
            # The cycle's last samples flow into the ones that preceded its first sample,
            # so that repeating it (end -> start) continues the waveform.
            ramp = np.linspace(0.0, 1.0, overlap, endpoint=False, dtype=np.float32)
            cycle[-overlap:] = cycle[-overlap:] * (1 - ramp) + history[-lag - overlap:-lag] * ramp
        return cycle

    def _pitch(self, history: np.ndarray) -> int:
        """The lag in [min, max] whose past best matches the last ``max`` samples
        (normalised cross-correlation, one C call for all lags)."""
        window = self._max_lag
        target = history[-window:]
        head = history[:-self._min_lag]  # every lag's past window lies inside this
        dots = np.correlate(head, target, mode="valid")  # dots[i]: the past starting at i
        squares = np.concatenate([[0.0], np.cumsum(head.astype(np.float64) ** 2)])
        energy = squares[window:] - squares[:-window]
        # Lag L's past starts at len(history) - window - L: the last len(dots) starts
        # are the lags max..min, from the longest.
        first = len(history) - window - self._max_lag
        score = dots[first:] / np.sqrt(np.maximum(energy[first:], 1e-9))
        return self._max_lag - int(np.argmax(score))

    def _remember(self, samples: np.ndarray) -> None:
        self._merge_recent()
        keep = len(self._history)
        if len(samples) >= keep:
            self._history = samples[-keep:]
        else:
            self._history = np.concatenate([self._history[len(samples):], samples])


def _to_int16(samples: np.ndarray) -> np.ndarray:
    return np.clip(np.round(samples), -32768, 32767).astype(np.int16)
