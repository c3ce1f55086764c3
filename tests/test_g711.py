"""G.711 codecs: constants, lookup, and the companding round trip."""

from __future__ import annotations

import math
import struct
import subprocess
import sys

import pytest

from media.audio import frame_bytes, silence
from media.g711 import CODECS, PCMA, PCMU, Codec, codec_by_name


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
    assert (PCMU.name, PCMU.payload_type, PCMU.clock_rate) == ("PCMU", 0, 8000)
    assert (PCMA.name, PCMA.payload_type, PCMA.clock_rate) == ("PCMA", 8, 8000)
    assert CODECS == {"PCMU": PCMU, "PCMA": PCMA}


def test_codec_by_name_folds_case() -> None:
    assert codec_by_name("PCMU") is PCMU
    assert codec_by_name("pcma") is PCMA


def test_codec_by_name_unknown_says_what_is_known() -> None:
    with pytest.raises(KeyError, match="G729.*PCMU, PCMA"):
        codec_by_name("G729")


@pytest.mark.parametrize("codec", [PCMU, PCMA], ids=lambda c: c.name)
def test_one_byte_per_sample(codec: Codec) -> None:
    pcm = sine(440, 8000, 160)
    payload = codec.encode(pcm)
    assert len(pcm) == frame_bytes(8000) == 320
    assert len(payload) == 160
    assert len(codec.decode(payload)) == 320


def test_digital_silence_encodings() -> None:
    # G.711: mu-law zero is 0xFF; A-law zero is 0xD5 (0x55 with the sign bit, after the
    # even-bit inversion).
    assert PCMU.encode(silence(8000)) == b"\xff" * 160
    assert PCMA.encode(silence(8000)) == b"\xd5" * 160
    assert PCMU.decode(b"\xff" * 160) == silence(8000)
    assert PCMA.decode(b"\xd5" * 160) == bytes(320).replace(b"\x00\x00", struct.pack("<h", 8))


@pytest.mark.parametrize("codec", [PCMU, PCMA], ids=lambda c: c.name)
def test_round_trip_keeps_speech_quality(codec: Codec) -> None:
    # G.711 gives about 38 dB SNR for a mid-level signal; anything far below means a
    # wrong table or byte order.
    pcm = sine(1004, 8000, 8000)
    assert snr_db(pcm, codec.decode(codec.encode(pcm))) > 33


@pytest.mark.parametrize("codec", [PCMU, PCMA], ids=lambda c: c.name)
def test_decode_then_encode_is_exact(codec: Codec) -> None:
    every_code = bytes(range(256))
    reencoded = codec.encode(codec.decode(every_code))
    # mu-law has two zeros (0x7F and 0xFF); both decode to 0, which encodes as 0xFF.
    differences = {a for a, b in zip(every_code, reencoded, strict=True) if a != b}
    assert differences <= {0x7F}


def test_encode_rejects_half_a_sample() -> None:
    with pytest.raises(ValueError, match="16-bit samples"):
        PCMU.encode(b"\x00\x00\x00")


def test_codec_is_validated() -> None:
    with pytest.raises(ValueError, match="no transcoder"):
        Codec("G722", 9, 8000)
    with pytest.raises(ValueError, match="payload type"):
        Codec("PCMU", 128, 8000)
    with pytest.raises(ValueError, match="clock rate"):
        Codec("PCMU", 0, 0)


def test_import_does_not_warn() -> None:
    # audioop is deprecated on 3.11/3.12; importing the codecs must stay silent even
    # where warnings are errors.
    result = subprocess.run(
        [sys.executable, "-W", "error::DeprecationWarning", "-c", "import media.g711"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
