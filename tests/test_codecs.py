"""The RTP codecs: constants, lookup, and each codec's round trip."""

from __future__ import annotations

import math
import struct
import subprocess
import sys

import pytest

from media.audio import frame_bytes, silence
import numpy as np

from media.codecs import CODECS, G722_CODEC, L16_CODEC, PCMA, PCMU, Codec, codec_by_name


def sine(freq: float, rate: int, n: int, amplitude: float = 8000.0) -> bytes:
    samples = (round(amplitude * math.sin(2 * math.pi * freq * i / rate)) for i in range(n))
    return struct.pack(f"<{n}h", *samples)


def snr_db(reference: bytes, decoded: bytes) -> float:
    ref = struct.unpack(f"<{len(reference) // 2}h", reference)
    out = struct.unpack(f"<{len(decoded) // 2}h", decoded)
    signal = sum(r * r for r in ref)
    noise = sum((r - o) ** 2 for r, o in zip(ref, out, strict=True))
    return 10 * math.log10(signal / noise)


def test_static_payload_types_of_rfc_3551() -> None:
    assert (PCMU.name, PCMU.payload_type, PCMU.clock_rate, PCMU.sample_rate) == ("PCMU", 0, 8000, 8000)
    assert (PCMA.name, PCMA.payload_type, PCMA.clock_rate, PCMA.sample_rate) == ("PCMA", 8, 8000, 8000)
    # RFC 3551 section 4.5.2: G.722 samples at 16 kHz on an 8 kHz RTP clock.
    assert (G722_CODEC.payload_type, G722_CODEC.rtpmap, G722_CODEC.sample_rate) == (9, "G722/8000", 16000)
    assert (L16_CODEC.rtpmap, L16_CODEC.sample_rate) == ("L16/16000", 16000)
    assert list(CODECS) == ["PCMU", "PCMA", "G722", "L16"]


def test_codec_by_name_folds_case() -> None:
    assert codec_by_name("PCMU") is PCMU
    assert codec_by_name("pcma") is PCMA


def test_codec_by_name_unknown_says_what_is_known() -> None:
    with pytest.raises(KeyError, match="G729.*PCMU, PCMA, G722, L16"):
        codec_by_name("G729")


@pytest.mark.parametrize("codec", [PCMU, PCMA], ids=lambda c: c.name)
def test_one_byte_per_sample(codec: Codec) -> None:
    pcm = sine(440, 8000, 160)
    payload = codec.transcoder().encode(pcm)
    assert len(pcm) == frame_bytes(8000) == 320
    assert len(payload) == 160 == codec.units(payload)
    assert len(codec.transcoder().decode(payload)) == 320


def test_digital_silence_encodings() -> None:
    # G.711: mu-law zero is 0xFF; A-law zero is 0xD5 (0x55 with the sign bit, after the
    # even-bit inversion).
    ulaw, alaw = PCMU.transcoder(), PCMA.transcoder()
    assert ulaw.encode(silence(8000)) == b"\xff" * 160
    assert alaw.encode(silence(8000)) == b"\xd5" * 160
    assert ulaw.decode(b"\xff" * 160) == silence(8000)
    assert alaw.decode(b"\xd5" * 160) == bytes(320).replace(b"\x00\x00", struct.pack("<h", 8))


@pytest.mark.parametrize("codec", [PCMU, PCMA], ids=lambda c: c.name)
def test_round_trip_keeps_speech_quality(codec: Codec) -> None:
    # G.711 gives about 38 dB SNR for a mid-level signal; anything far below means a
    # wrong table or byte order.
    pcm = sine(1004, 8000, 8000)
    transcoder = codec.transcoder()
    assert snr_db(pcm, transcoder.decode(transcoder.encode(pcm))) > 33


@pytest.mark.parametrize("codec", [PCMU, PCMA], ids=lambda c: c.name)
def test_decode_then_encode_is_exact(codec: Codec) -> None:
    every_code = bytes(range(256))
    transcoder = codec.transcoder()
    reencoded = transcoder.encode(transcoder.decode(every_code))
    # mu-law has two zeros (0x7F and 0xFF); both decode to 0, which encodes as 0xFF.
    differences = {a for a, b in zip(every_code, reencoded, strict=True) if a != b}
    assert differences <= {0x7F}


def test_encode_rejects_half_a_sample() -> None:
    with pytest.raises(ValueError, match="16-bit samples"):
        PCMU.transcoder().encode(b"\x00\x00\x00")


def test_codec_is_validated() -> None:
    with pytest.raises(ValueError, match="payload type"):
        Codec("PCMU", 128, 8000, 8000, 1, PCMU.transcoder)
    with pytest.raises(ValueError, match="rates must be positive"):
        Codec("PCMU", 0, 0, 8000, 1, PCMU.transcoder)


def test_l16_is_network_byte_order() -> None:
    transcoder = L16_CODEC.transcoder()
    assert transcoder.encode(struct.pack("<2h", 1, -2)) == struct.pack(">2h", 1, -2)
    assert transcoder.decode(struct.pack(">2h", 300, -7)) == struct.pack("<2h", 300, -7)
    assert L16_CODEC.units(bytes(640)) == 320


def test_g722_round_trip_keeps_wideband_speech() -> None:
    # A 5 kHz tone is beyond G.711's band but inside G.722's (50-7000 Hz).
    pcm = sine(5000, 16000, 16000)
    encoder, decoder = G722_CODEC.transcoder(), G722_CODEC.transcoder()
    payloads = [encoder.encode(pcm[i:i + 640]) for i in range(0, len(pcm), 640)]
    assert {len(p) for p in payloads} == {160} and G722_CODEC.units(payloads[0]) == 160
    decoded = b"".join(decoder.decode(p) for p in payloads)
    assert len(decoded) == len(pcm)
    # The codec delays its output by a few samples; align before comparing.
    ref, out = np.frombuffer(pcm, "<i2").astype(float), np.frombuffer(decoded, "<i2").astype(float)
    lag = max(range(40), key=lambda k: float(np.dot(ref[1000:15000], out[1000 + k:15000 + k])))
    noise = ref[1000:15000] - out[1000 + lag:15000 + lag]
    assert 10 * np.log10(np.sum(ref[1000:15000] ** 2) / np.sum(noise ** 2)) > 20


def test_g722_streams_keep_their_own_state() -> None:
    pcm = sine(700, 16000, 640)
    stream, fresh = G722_CODEC.transcoder(), G722_CODEC.transcoder()
    first = stream.encode(pcm)
    assert first == fresh.encode(pcm)  # two new streams start from the same state
    # ADPCM: the same audio encodes differently once the stream has history.
    assert stream.encode(pcm) != first


def test_import_does_not_warn() -> None:
    # audioop is deprecated on 3.11/3.12; importing the codecs must stay silent even
    # where warnings are errors.
    result = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", "import media.codecs"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
