"""Background ambience under the agent, and comfort noise in its silences.

A line that is digitally silent between the agent's sentences sounds dead: callers ask
"hello?" and talk over the agent. Contact centres play a faint office or a low hiss
under the voice, and so does AVR. Two sources, one per call:

- :class:`Ambience` loops a recorded sound (a WAV file, loaded once per process and
  resampled to each call rate) at a set level under the agent's audio, the loop seam
  cross-faded so that it does not click once a minute;
- :func:`comfort_noise` makes a loop of low-level noise, shaped by a one-pole low-pass
  (warmer than white noise, like a quiet line), played only where the agent is silent.

Both mix into 20 ms frames of s16le at the call rate, saturating rather than wrapping
where the agent is loud.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import soxr

from media.audio import frame_samples

#: Cross-fade at the loop seam.
SEAM_MS = 50
FULL_SCALE = 32768.0
#: Pole of the comfort noise's low-pass: a gentle tilt towards low frequencies.
NOISE_POLE = 0.6


def _mix(frame: bytes | None, extra: np.ndarray) -> bytes:
    if frame is None:
        out = extra
    else:
        samples = np.frombuffer(frame[:len(frame) - len(frame) % 2], dtype="<i2").astype(np.float32)
        out = samples + np.resize(extra, len(samples))  # a frame of another size is not fatal
    return np.clip(np.round(out), -32768, 32767).astype("<i2").tobytes()


class AmbienceSound:
    """A loaded ambience, shared by the calls of one rate: the loop with its seam."""

    def __init__(self, samples: np.ndarray, rate: int, level_db: float) -> None:
        if len(samples) < 2 * rate * SEAM_MS // 1000:
            raise ValueError("an ambience sound must be longer than 0.1 s")
        seam = rate * SEAM_MS // 1000
        loop = samples.astype(np.float32) * 10 ** (level_db / 20)
        # The last ``seam`` samples fade into the first ones, which are then cut from
        # the start: the loop wraps from a blend straight into the continuation.
        ramp = np.linspace(0.0, 1.0, seam, endpoint=False, dtype=np.float32)
        loop[-seam:] = loop[-seam:] * (1 - ramp) + loop[:seam] * ramp
        self.loop = loop[seam:]
        self.rate = rate


class Ambience:
    """One call's position in a shared :class:`AmbienceSound`. ``only_in_silence``:
    comfort noise, which fills the agent's silences and leaves its speech alone."""

    def __init__(self, sound: AmbienceSound, *, only_in_silence: bool = False) -> None:
        self._loop = sound.loop
        self._frame = frame_samples(sound.rate)
        self._position = 0
        self._only_in_silence = only_in_silence

    def mix(self, frame: bytes | None) -> bytes:
        """The agent's frame (None: silence) with the next 20 ms of ambience under it."""
        if self._only_in_silence and frame is not None:
            return frame
        start, end = self._position, self._position + self._frame
        if end <= len(self._loop):
            chunk = self._loop[start:end]
        else:  # across the seam
            chunk = np.concatenate([self._loop[start:], self._loop[:end - len(self._loop)]])
        self._position = end % len(self._loop)
        return _mix(frame, chunk)


def load_ambience(path: str | Path, rate: int, level_db: float) -> AmbienceSound:
    """Read a WAV (8/16-bit PCM, mono or stereo, any rate) for calls at ``rate``; a file
    that is not one raises ValueError naming it."""
    try:
        with wave.open(str(path), "rb") as wav:
            width, channels, source_rate = wav.getsampwidth(), wav.getnchannels(), wav.getframerate()
            data = wav.readframes(wav.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise ValueError(f"{path}: not a readable WAV file ({exc})") from None
    if width == 2:
        samples = np.frombuffer(data, dtype="<i2").astype(np.float32)
    elif width == 1:
        samples = (np.frombuffer(data, dtype=np.uint8).astype(np.float32) - 128) * 256
    else:
        raise ValueError(f"{path}: {8 * width}-bit samples; use 8- or 16-bit PCM")
    samples = samples.reshape(-1, channels).mean(axis=1)
    if source_rate != rate:
        samples = soxr.resample(samples, source_rate, rate)
    try:
        return AmbienceSound(samples, rate, level_db)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


def comfort_noise(rate: int, level_dbfs: float = -65.0, seconds: float = 5.0, seed: int = 0) -> AmbienceSound:
    """A loop of noise at ``level_dbfs`` RMS, slightly low-passed, made once per process
    and rate; each call plays it through an :class:`Ambience` in its silences only."""
    white = np.random.default_rng(seed).standard_normal(int(rate * seconds))
    shaped = np.empty_like(white)
    state = 0.0
    for i, x in enumerate(white):  # y[n] = x[n] + p y[n-1], once, so no call pays for it
        state = x + NOISE_POLE * state
        shaped[i] = state
    shaped *= FULL_SCALE * 10 ** (level_dbfs / 20) / np.sqrt(np.mean(shaped**2))
    return AmbienceSound(shaped, rate, 0.0)
