"""Ambience under the agent and comfort noise in its silences."""

from __future__ import annotations

import wave

import numpy as np
import pytest

from media.ambience import Ambience, AmbienceSound, comfort_noise, load_ambience

RATE = 8000


def rms_db(samples: np.ndarray) -> float:
    return 20 * np.log10(np.sqrt(np.mean(samples.astype(np.float64) ** 2)) / 32768)


def play(ambience: Ambience, frames: int, agent: bytes | None = None) -> np.ndarray:
    return np.concatenate([np.frombuffer(ambience.mix(agent), dtype="<i2") for _ in range(frames)])


def sine(freq: float, seconds: float, rate: int = RATE, amplitude: float = 10000) -> np.ndarray:
    n = np.arange(int(rate * seconds))
    return (np.sin(2 * np.pi * freq * n / rate) * amplitude).astype(np.int16)


def test_the_loop_seam_does_not_click():
    # 0.7309 s of 300 Hz: the loop ends near a crest and starts at zero.
    sound = AmbienceSound(sine(300, 0.7309), RATE, 0.0)
    out = play(Ambience(sound), 200).astype(np.int32)  # 4 s: five passes of the seam
    inside = np.max(np.abs(np.diff(sine(300, 0.7309).astype(np.int32))))
    assert np.max(np.abs(np.diff(out))) <= 1.05 * inside
    # Without the cross-fade, the seam would step by thousands.
    raw = np.tile(sine(300, 0.7309), 3).astype(np.int32)
    assert np.max(np.abs(np.diff(raw))) > 2 * inside


def test_level_is_the_file_level_plus_the_setting():
    source = sine(440, 2.0)
    out = play(Ambience(AmbienceSound(source, RATE, -20.0)), 50)
    assert rms_db(out) == pytest.approx(rms_db(source) - 20.0, abs=0.5)


def test_mixing_under_loud_agent_audio_saturates_instead_of_wrapping():
    loud = np.full(160, 32000, dtype="<i2").tobytes()
    out = np.frombuffer(Ambience(AmbienceSound(np.full(8000, 20000, np.int16), RATE, 0.0)).mix(loud), "<i2")
    assert out.min() == 32767  # not a wrap to negative


def test_load_a_stereo_44k_file_for_an_8k_call(tmp_path):
    path = tmp_path / "office.wav"
    tone = sine(440, 1.0, 44100)
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2), wav.setsampwidth(2), wav.setframerate(44100)
        wav.writeframes(np.repeat(tone, 2).astype("<i2").tobytes())  # the same on both channels
    sound = load_ambience(path, RATE, -10.0)
    assert abs(len(sound.loop) - (RATE - RATE * 50 // 1000)) <= 2  # one second, less the seam
    spectrum = np.abs(np.fft.rfft(sound.loop))
    assert abs(np.fft.rfftfreq(len(sound.loop), 1 / RATE)[np.argmax(spectrum)] - 440) < 3


def test_a_bad_file_is_named(tmp_path):
    path = tmp_path / "noise.wav"
    path.write_bytes(b"not a wav at all")
    with pytest.raises(ValueError, match="noise.wav: not a readable WAV file"):
        load_ambience(path, RATE, 0.0)
    short = tmp_path / "short.wav"
    with wave.open(str(short), "wb") as wav:
        wav.setnchannels(1), wav.setsampwidth(2), wav.setframerate(RATE)
        wav.writeframes(bytes(200))
    with pytest.raises(ValueError, match="short.wav: an ambience sound must be longer"):
        load_ambience(short, RATE, 0.0)


@pytest.mark.parametrize("rate", [8000, 16000])
def test_comfort_noise_fills_silence_at_its_level_and_leaves_speech_alone(rate):
    noise = Ambience(comfort_noise(rate, -60.0), only_in_silence=True)
    out = play(noise, 100)
    assert rms_db(out) == pytest.approx(-60.0, abs=1.0)
    # Shaped towards the low end: more energy below a quarter of the band than above.
    spectrum = np.abs(np.fft.rfft(out.astype(np.float64))) ** 2
    quarter = len(spectrum) // 4
    assert spectrum[:quarter].sum() > spectrum[-quarter:].sum()
    speech = sine(200, 0.02, rate).astype("<i2").tobytes()
    assert noise.mix(speech) == speech


def test_a_frame_of_another_size_is_mixed_not_fatal():
    ambience = Ambience(AmbienceSound(sine(440, 1.0), RATE, 0.0))
    assert len(ambience.mix(bytes(100))) == 100
