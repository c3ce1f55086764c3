"""Silero VAD on onnxruntime: reference probabilities, and turn segmentation."""

from __future__ import annotations

import importlib.util

import numpy as np
import onnxruntime
import pytest

from media.vad import SileroVad, SpeechEnd, SpeechStart, VadConfig, VadSegmenter, model_path
from tests.speech import speak


def reference_probabilities(samples: np.ndarray, rate: int) -> list[float]:
    """The official OnnxWrapper's feeding, written out: context prepended, state carried."""
    session = onnxruntime.InferenceSession(str(model_path()), providers=["CPUExecutionProvider"])
    window, context_size = (512, 64) if rate == 16000 else (256, 32)
    state = np.zeros((2, 1, 128), dtype=np.float32)
    context = np.zeros((1, context_size), dtype=np.float32)
    out = []
    for start in range(0, len(samples) - window + 1, window):
        x = np.concatenate([context, samples[start:start + window].reshape(1, -1)], axis=1)
        probability, state = session.run(None, {"input": x, "state": state, "sr": np.array(rate, dtype=np.int64)})
        context = x[:, -context_size:]
        out.append(float(probability[0, 0]))
    return out


@pytest.mark.parametrize("rate", [8000, 16000])
def test_probabilities_match_the_reference_wrapper(rate):
    pcm = bytes(rate // 2) + speak("the quick brown fox", rate) + bytes(rate // 2)
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    vad = SileroVad(rate)
    ours = [vad.probability(samples[i:i + vad.window]) for i in range(0, len(samples) - vad.window + 1, vad.window)]
    reference = reference_probabilities(samples, rate)
    assert np.allclose(ours, reference, atol=1e-5)
    assert max(ours) > 0.9 and min(ours) < 0.1  # the speech is found, the silence is not


def test_model_comes_from_the_wheel_without_torch():
    assert model_path().name == "silero_vad.onnx"
    assert importlib.util.find_spec("torch") is None


@pytest.mark.parametrize("rate", [8000, 16000])
def test_one_utterance_gives_one_start_and_one_end(rate):
    speech = speak("hello there, this is a test of the voice detector", rate)
    segmenter = VadSegmenter(rate)
    events = []
    pcm = bytes(rate * 2) + speech + bytes(rate * 2)
    for i in range(0, len(pcm), rate // 25):  # 20 ms frames
        events += segmenter.feed(pcm[i:i + rate // 25])
    assert [type(e) for e in events] == [SpeechStart, SpeechEnd]
    start, end = events
    speech_ms = len(speech) / 2 / rate * 1000
    assert 900 <= start.at_ms <= 1300  # the speech starts at 1000 ms
    assert abs(end.duration_ms - speech_ms) < 400


def test_silence_and_low_noise_give_nothing():
    segmenter = VadSegmenter(8000, VadConfig())
    noise = (np.random.default_rng(1).normal(0, 30, 8000 * 3)).astype("<i2").tobytes()
    assert segmenter.feed(bytes(8000 * 4)) == []
    assert segmenter.feed(noise) == []


def test_short_click_is_not_speech():
    segmenter = VadSegmenter(8000, VadConfig(min_speech_ms=250))
    click = speak("ah", 8000)[:8000 * 2 // 10]  # 100 ms
    assert segmenter.feed(bytes(16000) + click + bytes(16000)) == []


def test_wrong_rate_is_refused():
    with pytest.raises(ValueError, match="8000 or 16000"):
        SileroVad(44100)
