"""The streaming resampler: chunked output equals one-shot output, with no seams."""

from __future__ import annotations

import numpy as np
import pytest
import soxr

from media.audio import frame_bytes
from media.resample import Resampler

TONE_HZ = 440.0
AMPLITUDE = 8000.0


def tone(rate: int, seconds: float) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return np.round(AMPLITUDE * np.sin(2 * np.pi * TONE_HZ * t)).astype(np.int16)


def stream(resampler: Resampler, pcm: bytes, chunk: int) -> np.ndarray:
    out = b"".join(resampler.process(pcm[i : i + chunk]) for i in range(0, len(pcm), chunk))
    return np.frombuffer(out + resampler.flush(), dtype="<i2")


def peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


def test_8k_to_16k_in_20ms_chunks_matches_one_shot() -> None:
    signal = tone(8000, 1.0)
    chunked = stream(Resampler(8000, 16000), signal.tobytes(), frame_bytes(8000))
    one_shot = soxr.resample(signal, 8000, 16000)
    assert abs(len(chunked) - 16000) <= 4
    assert len(chunked) == len(one_shot)
    # Same filter, same state: identical but for soxr's int16 dither (up to 2 LSB). A
    # per-chunk restart would be off by thousands at every 20 ms border.
    assert np.max(np.abs(chunked.astype(int) - one_shot.astype(int))) <= 2
    assert peak_hz(chunked, 16000) == pytest.approx(TONE_HZ, abs=2)


def test_8k_16k_8k_round_trip_keeps_the_tone_without_seams() -> None:
    signal = tone(8000, 1.0)
    up = stream(Resampler(8000, 16000), signal.tobytes(), frame_bytes(8000))
    back = stream(Resampler(16000, 8000), up.tobytes(), frame_bytes(16000))
    assert abs(len(back) - len(signal)) <= 4
    assert peak_hz(back, 8000) == pytest.approx(TONE_HZ, abs=2)
    # The steepest step of a clean 440 Hz sine at 8 kHz is 2*pi*440/8000*A ~ 2765;
    # a click at a chunk border would show up as a far larger jump.
    steepest = 2 * np.pi * TONE_HZ / 8000 * AMPLITUDE
    body = back[100:-100].astype(int)
    assert np.max(np.abs(np.diff(body))) < steepest * 1.05
    # And it is the same signal, not just the same pitch.
    assert np.max(np.abs(body - signal[100:-100].astype(int))) < 0.01 * AMPLITUDE


@pytest.mark.parametrize(("in_rate", "out_rate"), [(24000, 8000), (8000, 24000), (16000, 8000)])
def test_chunk_size_does_not_change_the_output(in_rate: int, out_rate: int) -> None:
    pcm = tone(in_rate, 0.5).tobytes()
    framed = stream(Resampler(in_rate, out_rate), pcm, frame_bytes(in_rate))
    ragged = stream(Resampler(in_rate, out_rate), pcm, 2 * 37)
    # soxr dithers its int16 output, so two runs differ by up to 2 LSB, never more.
    assert np.max(np.abs(framed.astype(int) - ragged.astype(int))) <= 2
    assert abs(len(framed) - len(pcm) // 2 * out_rate // in_rate) <= 4


def test_equal_rates_pass_through() -> None:
    resampler = Resampler(8000, 8000)
    pcm = tone(8000, 0.02).tobytes()
    assert resampler.process(pcm) is pcm
    assert resampler.flush() == b""


def test_half_a_sample_is_refused() -> None:
    with pytest.raises(ValueError, match="16-bit samples"):
        Resampler(8000, 16000).process(b"\x00\x00\x00")


def test_a_flushed_stream_is_finished() -> None:
    resampler = Resampler(8000, 16000)
    resampler.process(bytes(320))
    resampler.flush()
    with pytest.raises(RuntimeError, match="flushed"):
        resampler.process(bytes(320))
    with pytest.raises(RuntimeError, match="flushed"):
        resampler.flush()


def test_rates_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Resampler(0, 8000)


def test_quality_is_passed_to_soxr() -> None:
    # "QQ" answers within the chunk; the default "HQ" holds output back for its filter.
    assert len(Resampler(8000, 16000, quality="QQ").process(bytes(320))) > 0
    with pytest.raises(ValueError):
        Resampler(8000, 16000, quality="best")
