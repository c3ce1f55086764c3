"""Silero VAD on onnxruntime: reference probabilities, the energy gate, and segmentation."""

from __future__ import annotations

import importlib.util
import sys

import numpy as np
import onnxruntime
import pytest
import trio

from media.audio import duration_ms, frame_bytes, silence
from media.vad import (
    VadBatcher,
    SileroVad,
    SpeechEnd,
    SpeechStart,
    VadConfig,
    VadSegmenter,
    model_path,
)
from tests.speech import speak

RATES = [8000, 16000]


def reference_probabilities(samples: np.ndarray, rate: int) -> list[float]:
    """The official OnnxWrapper's feeding, written out: context prepended, state carried."""
    session = onnxruntime.InferenceSession(str(model_path()), providers=["CPUExecutionProvider"])
    window, context_size = (512, 64) if rate == 16000 else (256, 32)
    state = np.zeros((2, 1, 128), dtype=np.float32)
    context = np.zeros((1, context_size), dtype=np.float32)
    sr = np.array(rate, dtype=np.int64)
    out = []
    for start in range(0, len(samples) - window + 1, window):
        x = np.concatenate([context, samples[start:start + window].reshape(1, -1)], axis=1)
        probability, state = session.run(None, {"input": x, "state": state, "sr": sr})
        context = x[..., -context_size:]
        out.append(float(probability[0, 0]))
    return out


def frames(pcm: bytes, rate: int) -> list[bytes]:
    size = frame_bytes(rate)
    return [pcm[i:i + size] for i in range(0, len(pcm), size)]


async def segment(pcm: bytes, rate: int, config: VadConfig | None = None) -> list[SpeechStart | SpeechEnd]:
    """Events of ``pcm`` fed as a call would, one 20 ms frame at a time."""
    segmenter = VadSegmenter(rate, config)
    return [event for frame in frames(pcm, rate) for event in await segmenter.feed(frame)]


def noise(rate: int, seconds: float, dbfs: float) -> bytes:
    rms = 32768 * 10 ** (dbfs / 20)
    samples = np.random.default_rng(7).normal(0, rms, round(rate * seconds))
    return samples.clip(-32768, 32767).astype("<i2").tobytes()


def test_model_is_found_without_importing_the_package():
    assert model_path().name == "silero_vad.onnx"
    assert "silero_vad" not in sys.modules  # its __init__ would import torch
    assert importlib.util.find_spec("torch") is None


@pytest.mark.parametrize("rate", RATES)
def test_probabilities_equal_the_reference_wrapper(rate):
    pcm = silence(rate, 500) + speak("the quick brown fox jumps over the lazy dog", rate) + silence(rate, 500)
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
    vad = SileroVad(rate)
    ours = [vad.probability(samples[i:i + vad.window]) for i in range(0, len(samples) - vad.window + 1, vad.window)]
    reference = reference_probabilities(samples, rate)
    assert len(ours) == len(reference) > 50
    assert np.allclose(ours, reference, rtol=0, atol=1e-5)
    assert max(ours) > 0.9 and min(ours) < 0.1  # the speech is found, the silence is not


def test_reset_starts_the_stream_again():
    samples = np.random.default_rng(3).normal(0, 0.1, 512 * 4).astype(np.float32)
    vad = SileroVad(16000)
    first = [vad.probability(samples[i:i + 512]) for i in range(0, len(samples), 512)]
    vad.reset()
    assert [vad.probability(samples[i:i + 512]) for i in range(0, len(samples), 512)] == first


@pytest.mark.parametrize("rate", RATES)
async def test_speech_padded_with_silence_is_one_start_then_one_end(rate):
    speech = speak("hello there, this is a test of the voice detector", rate)
    events = await segment(silence(rate, 1000) + speech + silence(rate, 1000), rate)
    assert [type(event) for event in events] == [SpeechStart, SpeechEnd]
    start, end = events
    assert 1000 - 100 <= start.at_ms <= 1000 + 100  # the speech starts at 1000 ms
    assert abs(end.at_ms - (1000 + duration_ms(speech, rate))) <= 100
    assert end.duration_ms == end.at_ms - start.at_ms


@pytest.mark.parametrize("rate", RATES)
async def test_silence_and_noise_are_not_speech(rate):
    assert await segment(silence(rate, 3000), rate) == []
    assert await segment(noise(rate, 3.0, -70.0), rate) == []  # under the energy floor
    assert await segment(noise(rate, 3.0, -40.0), rate) == []  # over it: the model says no


async def test_windows_under_the_energy_floor_never_reach_the_model(monkeypatch):
    scored = []
    monkeypatch.setattr(SileroVad, "probability", lambda self, window: scored.append(window) or 0.0)
    segmenter = VadSegmenter(8000)
    assert await segmenter.feed(noise(8000, 1.0, -70.0)) == []
    assert scored == []
    await segmenter.feed(noise(8000, 1.0, -30.0))
    assert len(scored) == 8000 // 256


async def test_a_short_sound_is_not_speech():
    click = speak("ah", 8000)[: 8000 * 2 // 10]  # its first 100 ms
    assert await segment(silence(8000, 500) + click + silence(8000, 1000), 8000) == []


class ScriptedVad:
    """Stands in for SileroVad: one scripted probability per 32 ms window."""

    window = 256

    def __init__(self, probabilities: list[float]) -> None:
        self._probabilities = iter(probabilities)

    async def score(self, window: np.ndarray) -> float:
        return next(self._probabilities)

    def skip(self, window: np.ndarray) -> None:
        raise AssertionError("loud audio is never gated")


async def scripted(probabilities: list[float], config: VadConfig | None = None) -> list[SpeechStart | SpeechEnd]:
    segmenter = VadSegmenter(8000, config, ScriptedVad(probabilities))
    return await segmenter.feed(noise(8000, len(probabilities) * 0.032, -20.0))


async def test_hysteresis_between_the_thresholds():
    # 32 ms windows; min_speech 250 ms = 8 windows, min_silence 500 ms = 16 windows.
    dip = [0.4] * 20  # between neg_threshold (0.35) and threshold: neither starts nor ends
    events = await scripted([0.0] * 5 + [0.9] * 10 + dip + [0.9] * 5 + [0.1] * 16 + [0.0] * 3)
    assert events == [SpeechStart(5 * 32.0), SpeechEnd(40 * 32.0, 35 * 32.0)]


async def test_a_pause_is_cancelled_only_by_speech_above_the_threshold():
    # Below neg_threshold starts the pause; 0.4 does not cancel it; 0.9 does.
    events = await scripted([0.9] * 10 + [0.1] * 8 + [0.4] * 6 + [0.9] * 2 + [0.1] * 15)
    assert events == [SpeechStart(0.0)]
    events = await scripted([0.9] * 10 + [0.1] * 8 + [0.4] * 8)
    assert events == [SpeechStart(0.0), SpeechEnd(10 * 32.0, 10 * 32.0)]


async def test_a_candidate_dies_below_the_negative_threshold():
    events = await scripted([0.9] * 7 + [0.2] + [0.9] * 7 + [0.0] * 20)
    assert events == []


def test_pre_roll_covers_padding_and_the_start_delay():
    segmenter = VadSegmenter(8000, VadConfig(min_speech_ms=250, padding_ms=200))
    assert segmenter.pre_roll_ms == 200 + 9 * 32


def test_wrong_rate_is_refused():
    with pytest.raises(ValueError, match="8000 or 16000"):
        SileroVad(44100)
    with pytest.raises(ValueError, match="256 samples"):
        SileroVad(8000).probability(np.zeros(512, dtype=np.float32))


SENTENCES = ["one two three four", "the weather is fine today", "please call me back later",
             "seven eight nine", "where is the station", "good morning to you"]


def call_audio(index: int, rate: int) -> np.ndarray:
    """A different caller per index: its own sentence after its own silence."""
    pcm = silence(rate, 100 * index) + speak(SENTENCES[index % len(SENTENCES)], rate) + silence(rate, 300)
    return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0


async def batched_probabilities(audio: list[np.ndarray], rates: list[int], *, tick: bool) -> tuple[list[list[float]], VadBatcher]:
    """Each stream in a task of its own: its k-th window is complete at k * 32 ms plus a
    phase of its own (calls are not in step), on a fake clock."""
    batcher = VadBatcher()
    streams = [batcher.stream(rate) for rate in rates]
    results: list[list[float]] = [[] for _ in audio]

    async def caller(i: int) -> None:
        stream, samples = streams[i], audio[i]
        begin = trio.current_time() + 0.0025 * i
        for k, start in enumerate(range(0, len(samples) - stream.window + 1, stream.window)):
            await trio.sleep_until(begin + 0.032 * k)
            results[i].append(await stream.score(samples[start:start + stream.window]))
        stream.close()

    async with trio.open_nursery() as nursery:
        if tick:
            await nursery.start(batcher.run)
        async with trio.open_nursery() as callers:
            for i in range(len(audio)):
                callers.start_soon(caller, i)
        nursery.cancel_scope.cancel()
    return results, batcher


@pytest.mark.parametrize("tick", [True, False], ids=["running", "not-running"])
async def test_batched_probabilities_equal_each_stream_run_alone(autojump_clock, tick):
    rates = [8000, 16000, 8000, 8000, 16000, 8000] * 2
    audio = [call_audio(i, rate) for i, rate in enumerate(rates)]
    batched, batcher = await batched_probabilities(audio, rates, tick=tick)
    for samples, rate, ours in zip(audio, rates, batched, strict=True):
        alone = SileroVad(rate)
        reference = [alone.probability(samples[i:i + alone.window])
                     for i in range(0, len(samples) - alone.window + 1, alone.window)]
        assert len(ours) == len(reference) > 20
        assert np.allclose(ours, reference, rtol=0, atol=1e-4)
        assert max(ours) > 0.9  # each one's speech is found
    if tick:  # shared runs really happened: about one per rate per tick
        assert batcher.runs < batcher.windows / 2
    else:  # without its task, the batcher scores each window at once, alone
        assert batcher.runs == batcher.windows


async def test_a_lone_stream_is_scored_at_once_without_waiting_for_a_tick(mock_clock):
    # The fake clock moves only after a real second with every task blocked: time enough
    # for the model's worker thread, so any time that passes here is a tick waited for.
    mock_clock.autojump_threshold = 1.0
    batcher = VadBatcher()
    async with trio.open_nursery() as nursery:
        await nursery.start(batcher.run)
        stream = batcher.stream(8000)
        before = trio.current_time()
        await stream.score(np.zeros(256, dtype=np.float32))
        assert trio.current_time() == before  # every open stream was due: no tick awaited
        other = batcher.stream(8000)
        await stream.score(np.zeros(256, dtype=np.float32))
        # With a second open stream that has nothing due, the window waits for the tick.
        assert 0 < trio.current_time() - before <= batcher.interval
        other.close()
        stream.close()
        nursery.cancel_scope.cancel()
    assert batcher.windows == 2
