"""Packet loss concealment: voiced audio goes on smoothly, fades, and hands back cleanly."""

from __future__ import annotations

import numpy as np
import pytest

from media.plc import Concealer


def tone(rate: int, freq: float, count: int, start: int = 0) -> np.ndarray:
    n = np.arange(start, start + count)
    # A voice-like tone: a fundamental with two harmonics.
    signal = np.sin(2 * np.pi * freq * n / rate) + 0.5 * np.sin(4 * np.pi * freq * n / rate) \
        + 0.25 * np.sin(6 * np.pi * freq * n / rate)
    return (signal * 6000).astype(np.int16)


def max_step(samples: np.ndarray) -> int:
    return int(np.max(np.abs(np.diff(samples.astype(np.int32)))))


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize("freq", [110.0, 150.0, 190.0])
def test_concealment_continues_a_voiced_sound_without_a_click(rate: int, freq: float) -> None:
    plc = Concealer(rate)
    frame = rate // 50
    history = tone(rate, freq, frame * 5)
    for i in range(5):
        plc.good(history[i * frame:(i + 1) * frame])
    invented = plc.conceal(frame)
    joined = np.concatenate([history[-frame:], invented])
    # No step at the seam or inside much larger than the tone itself makes. The margin is
    # for a period that is not a whole number of samples (16 kHz / 110 Hz = 145.45); a
    # gap of zeros would step by the full amplitude, over 10 times the tone's own step.
    assert max_step(joined) <= 1.5 * max_step(history)
    # The first 10 ms repeat the waveform at full level (pitch repetition, not silence).
    head = invented[: rate // 100].astype(np.float64)
    assert np.sqrt(np.mean(head ** 2)) > 0.8 * np.sqrt(np.mean(history.astype(np.float64) ** 2))


@pytest.mark.parametrize("rate", [8000, 16000])
def test_concealment_fades_to_silence_by_60_ms(rate: int) -> None:
    plc = Concealer(rate)
    frame = rate // 50
    plc.good(tone(rate, 140.0, frame * 3))
    frames = [plc.conceal(frame) for _ in range(4)]
    levels = [float(np.sqrt(np.mean(f.astype(np.float64) ** 2))) for f in frames]
    assert levels[0] > levels[1] > levels[2] > 0
    assert levels[3] == 0.0
    assert plc.exhausted
    # The fade itself is smooth: no sample-to-sample jump beyond the tone's own.
    assert max_step(np.concatenate(frames)) <= 1.3 * max_step(tone(rate, 140.0, frame))


def test_recovery_cross_fades_into_real_audio() -> None:
    rate, frame = 8000, 160
    plc = Concealer(rate)
    signal = tone(rate, 120.0, frame * 8)
    out = [plc.good(signal[:frame * 4])]
    out.append(plc.conceal(frame))  # frame 4 lost
    out.append(plc.good(signal[frame * 5:frame * 6]))
    joined = np.concatenate(out)
    assert max_step(joined) <= 1.3 * max_step(signal)
    assert not plc.concealing
    # After the cross-fade, real audio passes untouched.
    assert np.array_equal(plc.good(signal[frame * 6:frame * 7]), signal[frame * 6:frame * 7])


def test_good_audio_passes_through_unchanged() -> None:
    plc = Concealer(16000)
    signal = tone(16000, 200.0, 320)
    assert np.array_equal(plc.good(signal), signal)


def test_concealing_silence_stays_silent() -> None:
    plc = Concealer(8000)
    plc.good(np.zeros(480, dtype=np.int16))
    assert not np.any(plc.conceal(160))


@pytest.mark.parametrize("rate", [8000, 16000])
def test_frames_remembered_as_bytes_conceal_exactly_as_arrays_do(rate: int) -> None:
    """The jitter buffer's fast path hands over bytes; a loss after it must sound the same."""
    frame = rate // 50
    history = tone(rate, 130.0, frame * 12)
    as_arrays, as_bytes = Concealer(rate), Concealer(rate)
    for i in range(12):
        chunk = history[i * frame:(i + 1) * frame]
        as_arrays.good(chunk)
        as_bytes.good_pcm(chunk.astype("<i2").tobytes())
    assert np.array_equal(as_arrays.conceal(frame), as_bytes.conceal(frame))
    after = tone(rate, 130.0, frame, start=frame * 13)
    assert np.array_equal(as_arrays.good(after), as_bytes.good(after))
