"""AudioSocket wire formats: telling G.711 from slin, which law, and the rate bridge."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from sipgw.audiosocket.wire import Bridge, WireFormat, detect, guess_law
from tests.speech import speak

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

ENCODE = {"ulaw": audioop.lin2ulaw, "alaw": audioop.lin2alaw}


def frames_of(pcm: bytes, size: int) -> list[bytes]:
    return [pcm[i:i + size] for i in range(0, len(pcm) - size + 1, size)]


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_every_frame_of_speech_tells_its_law(law):
    pcm = speak("the quick brown fox jumps over the lazy dog", 8000)
    payloads = frames_of(ENCODE[law](pcm, 2), 160)
    assert len(payloads) > 50
    assert [guess_law(p) for p in payloads] == [law] * len(payloads)
    assert detect(payloads[0], 8000) == WireFormat(law, 8000)


def test_the_law_can_be_fixed_by_configuration():
    silence_ulaw = b"\xff" * 160
    assert detect(silence_ulaw, 8000) == WireFormat("ulaw", 8000)
    assert detect(silence_ulaw, 8000, "alaw") == WireFormat("alaw", 8000)


@pytest.mark.parametrize(("size", "rate", "expected"), [
    (320, 8000, WireFormat("slin", 8000)),  # 20 ms of slin
    (480, 8000, WireFormat("slin", 8000)),  # 30 ms of slin
    (160, 16000, WireFormat("slin", 16000)),  # a wideband kind is always slin
    (1920, 48000, WireFormat("slin", 48000)),
])
def test_slin_is_slin(size, rate, expected):
    assert detect(bytes(size), rate) == expected
    assert expected.call_rate == (16000 if rate >= 16000 else 8000)


@pytest.mark.parametrize("law", ["ulaw", "alaw"])
def test_g711_is_decoded_to_the_speech_it_carries(law):
    pcm = speak("seven eight nine", 8000)
    bridge = Bridge(WireFormat(law, 8000))
    decoded = b"".join(bridge.inbound(p) for p in frames_of(ENCODE[law](pcm, 2), 160))
    ref = np.frombuffer(pcm[:len(decoded)], "<i2").astype(float)
    out = np.frombuffer(decoded, "<i2").astype(float)
    snr = 10 * np.log10(np.sum(ref ** 2) / np.sum((ref - out) ** 2))
    assert snr > 30  # G.711's own quantisation; the wrong law would be far below 0 dB


@pytest.mark.parametrize("wire_rate", [12000, 24000, 48000])
def test_outbound_frames_are_20_ms_of_a_continuous_signal(wire_rate):
    wire = WireFormat("slin", wire_rate)
    bridge = Bridge(wire)
    call_rate = wire.call_rate
    n = np.arange(call_rate * 2)
    tone = (np.sin(2 * np.pi * 440 * n / call_rate) * 8000).astype("<i2").tobytes()
    frame = call_rate * 2 // 50
    out = [bridge.outbound(tone[i:i + frame]) for i in range(0, len(tone), frame)]
    assert {len(o) for o in out} == {wire_rate * 2 // 50}  # one wire frame per tick, always
    samples = np.frombuffer(b"".join(out), "<i2").astype(float)
    started = np.flatnonzero(np.abs(samples) > 100)[0]
    assert started < wire_rate * 0.15  # the resampler's start-up delay is short
    body = samples[started + wire_rate // 10: -wire_rate // 10]
    # A 440 Hz tone at the wire rate: no step between samples beyond the tone's own slope.
    assert np.max(np.abs(np.diff(body))) <= 8000 * 2 * np.pi * 440 / wire_rate * 1.1


def test_inbound_wideband_is_resampled_to_16_khz():
    bridge = Bridge(WireFormat("slin", 48000))
    n = np.arange(48000)
    tone = (np.sin(2 * np.pi * 1000 * n / 48000) * 8000).astype("<i2").tobytes()
    out = b"".join(bridge.inbound(tone[i:i + 1920]) for i in range(0, len(tone), 1920))
    samples = np.frombuffer(out, "<i2").astype(float)
    assert abs(len(samples) - 16000) < 16000 * 0.1  # a third of the samples (minus the filter lag)
    spectrum = np.abs(np.fft.rfft(samples[2000:]))
    assert abs(np.fft.rfftfreq(len(samples) - 2000, 1 / 16000)[np.argmax(spectrum)] - 1000) < 5
