"""Google Cloud Text-to-Speech (v1).

Audio is asked for at the caller's rate (``AudioConfig.sample_rate_hertz``), so nothing is
resampled here: Google converts, or refuses a rate its encoding cannot carry.

Two ways to synthesise:

- ``SynthesizeSpeech`` (the default), one request per sentence (the text is cut as eSpeak's
  is, :func:`providers.local.espeak.segments`): the first sentence's audio is out after its
  own synthesis instead of the whole reply's, and a reply longer than the service's 5000
  bytes of input still goes through. LINEAR16 and MULAW replies come wrapped in a WAV
  file; the header is parsed (format, channels and rate checked) and dropped, and
  mu-law is expanded to s16le. The blocking wait for the reply runs in a worker thread
  (``trio.to_thread.run_sync``, abandoned on cancellation) while the call itself is a grpc
  future, cancelled on every way out, so a barge-in cancels the RPC at the service.
- ``StreamingSynthesize`` (``streaming=True``): one bidirectional call, a text input per
  sentence, audio back as it is made, headerless. Google offers it for Chirp 3: HD voices
  only ("en-US-Chirp3-HD-Charon"), whose streaming config has no pitch; both are checked
  at start-up. The call runs on :class:`~providers.google.thread_stream.GrpcStream`.
"""

from __future__ import annotations

import math
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import aclosing
from dataclasses import dataclass

import grpc
import trio

from media.audio import SAMPLE_WIDTH
from media.codecs import PCMU

from ..base import ProviderError
from ..local.espeak import segments
from . import connect, one_line, rpc_failure
from .thread_stream import GrpcStream

try:
    from google.cloud import texttospeech_v1 as tts
except ImportError:
    raise ProviderError("Google Text-to-Speech needs the google extra: pip install 'trivox[google]'") from None

PRODUCT = "Google Text-to-Speech"
ENCODINGS = ("LINEAR16", "MULAW")
#: Audio per yielded chunk, the grain of a cancelled utterance's queued audio.
CHUNK_MS = 100
#: AudioConfig's ranges.
SPEAKING_RATES = (0.25, 2.0)
PITCHES = (-20.0, 20.0)
#: The voice family that StreamingSynthesize speaks with.
STREAMING_VOICES = "Chirp3-HD"
#: RFC 2361: the WAV format tags of the encodings we ask for.
WAVE_FORMATS = {"LINEAR16": 1, "MULAW": 7}


@dataclass(frozen=True)
class WavAudio:
    format_tag: int
    channels: int
    sample_rate: int
    payload: bytes


def parse_wav(data: bytes) -> WavAudio:
    """The format and the ``data`` chunk of a RIFF/WAVE file; ValueError if it is none.

    Chunks are walked rather than a 44-byte header assumed: non-PCM files (mu-law) carry a
    longer ``fmt`` chunk and a ``fact`` chunk. A ``data`` size past the end (a streamed
    file's placeholder) means "to the end".
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE file")
    position, fmt = 12, None
    while position + 8 <= len(data):
        tag = data[position:position + 4]
        (size,) = struct.unpack_from("<I", data, position + 4)
        body = data[position + 8:position + 8 + size]
        if tag == b"fmt ":
            if len(body) < 8:
                raise ValueError("truncated fmt chunk")
            fmt = struct.unpack_from("<HHI", body)
        elif tag == b"data":
            if fmt is None:
                raise ValueError("data chunk before the fmt chunk")
            return WavAudio(fmt[0], fmt[1], fmt[2], body)
        position += 8 + size + (size & 1)  # chunks are padded to an even length
    raise ValueError("no data chunk")


class _Decoder:
    """The service's audio bytes -> s16le, across chunk borders (a sample may be split)."""

    def __init__(self, encoding: str) -> None:
        self._expand: Callable[[bytes], bytes] | None = PCMU.transcoder().decode if encoding == "MULAW" else None
        self._odd = b""

    def decode(self, audio: bytes) -> bytes:
        if self._expand is not None:
            return self._expand(audio)
        audio = self._odd + audio
        whole = len(audio) - len(audio) % SAMPLE_WIDTH
        self._odd = audio[whole:]
        return audio[:whole]


class GoogleTTS:
    """The TTS protocol on Google Cloud Text-to-Speech v1.

    ``voice`` is a Google voice name, ``language`` its BCP-47 code (empty: the voice
    name's own, "en-US" for "en-US-Standard-C"); ``speaking_rate`` 0.25..2.0, ``pitch``
    in semitones -20..20; ``encoding`` "LINEAR16" or "MULAW" (what crosses the network);
    ``streaming`` uses StreamingSynthesize (Chirp 3: HD voices). ``credentials`` and
    ``endpoint`` as for :class:`providers.google.speech.GoogleSpeech`.
    """

    name = "google"

    def __init__(self, voice: str = "en-US-Standard-C", language: str = "", speaking_rate: float = 1.0,
                 pitch: float = 0.0, encoding: str = "LINEAR16", credentials: str = "", endpoint: str = "",
                 streaming: bool = False) -> None:
        if encoding not in ENCODINGS:
            raise ProviderError(f"{PRODUCT} encoding must be one of {', '.join(ENCODINGS)}, not {encoding!r}")
        if not SPEAKING_RATES[0] <= speaking_rate <= SPEAKING_RATES[1]:
            raise ProviderError(f"{PRODUCT} speaking rate is {SPEAKING_RATES[0]}..{SPEAKING_RATES[1]}, "
                                f"not {speaking_rate}")
        if not PITCHES[0] <= pitch <= PITCHES[1]:
            raise ProviderError(f"{PRODUCT} pitch is {PITCHES[0]}..{PITCHES[1]} semitones, not {pitch}")
        if streaming and STREAMING_VOICES not in voice:
            raise ProviderError(f"{PRODUCT} streams with {STREAMING_VOICES} voices only (such as "
                                f"en-US-{STREAMING_VOICES}-Charon), not {voice!r}: pick one or turn streaming off")
        if streaming and pitch:
            raise ProviderError(f"{PRODUCT} streaming synthesis has no pitch: set pitch to 0 or turn streaming off")
        language = language or _language_of(voice)
        self._voice = tts.VoiceSelectionParams(language_code=language, name=voice)
        self._speaking_rate = speaking_rate
        self._pitch = pitch
        self._encoding = encoding
        self._streaming = streaming
        self._client = connect(tts.TextToSpeechClient, PRODUCT, credentials, endpoint)

    async def synthesize(self, text: str, sample_rate: int) -> AsyncIterator[bytes]:
        if sample_rate <= 0:
            raise ValueError(f"sample rate must be positive, not {sample_rate}")
        sentences = segments(text)
        if not sentences:
            return
        chunk = sample_rate * SAMPLE_WIDTH * CHUNK_MS // 1000
        synthesis = self._stream if self._streaming else self._one_by_one
        # Closed with us: a consumer that stops reading ends the call now, not at garbage collection.
        async with aclosing(synthesis(sentences, sample_rate)) as pieces:
            async for pcm in pieces:
                for start in range(0, len(pcm), chunk):
                    yield pcm[start:start + chunk]

    async def _one_by_one(self, sentences: list[str], sample_rate: int) -> AsyncIterator[bytes]:
        """One SynthesizeSpeech call per sentence, each reply whole."""
        audio_config = tts.AudioConfig(audio_encoding=self._encoding, sample_rate_hertz=sample_rate,
                                       speaking_rate=self._speaking_rate, pitch=self._pitch)
        for sentence in sentences:
            request = tts.SynthesizeSpeechRequest(input=tts.SynthesisInput(text=sentence), voice=self._voice,
                                                  audio_config=audio_config)
            future = self._client.transport.synthesize_speech.future(request)
            try:
                reply = await trio.to_thread.run_sync(future.result, abandon_on_cancel=True)
            except grpc.RpcError as exc:
                raise rpc_failure(PRODUCT, exc) from None
            finally:
                future.cancel()  # a no-op once it is done; else the service sees the cancellation
            yield self._unwrap(reply.audio_content, sample_rate)

    async def _stream(self, sentences: list[str], sample_rate: int) -> AsyncIterator[bytes]:
        """One StreamingSynthesize call, audio yielded as it arrives."""
        config = tts.StreamingSynthesizeConfig(voice=self._voice, streaming_audio_config=tts.StreamingAudioConfig(
            audio_encoding="PCM" if self._encoding == "LINEAR16" else self._encoding,
            sample_rate_hertz=sample_rate, speaking_rate=self._speaking_rate))
        # Unbounded: the reply is bounded by the text, and the reader thread must never wait on us.
        send, receive = trio.open_memory_channel[bytes](math.inf)
        stream = GrpcStream(self._client.transport.streaming_synthesize,
                            tts.StreamingSynthesizeRequest(streaming_config=config),
                            on_response=lambda response: send.send_nowait(response.audio_content),
                            on_end=send.close)
        try:
            for sentence in sentences:
                stream.send(tts.StreamingSynthesizeRequest(input=tts.StreamingSynthesisInput(text=sentence)))
            stream.close()
            decoder = _Decoder(self._encoding)
            first = True
            async for audio in receive:
                if first and audio[:4] == b"RIFF":  # headerless by the docs; a header is dropped
                    audio = self._wav_payload(audio, sample_rate)
                first = False
                pcm = decoder.decode(audio)
                if pcm:
                    yield pcm
            if isinstance(stream.error, grpc.RpcError):
                raise rpc_failure(PRODUCT, stream.error) from None
            if stream.error is not None:
                raise ProviderError(f"{PRODUCT} failed: {one_line(stream.error)}") from None
        finally:
            stream.cancel()  # a no-op once it ended
            with trio.CancelScope(shield=True):  # bounded: a cancelled call ends at once
                await stream.wait()

    def _unwrap(self, audio: bytes, sample_rate: int) -> bytes:
        """A SynthesizeSpeech reply as s16le: WAV header checked and dropped, mu-law expanded."""
        if audio[:4] == b"RIFF":
            audio = self._wav_payload(audio, sample_rate)
        return _Decoder(self._encoding).decode(audio)

    def _wav_payload(self, audio: bytes, sample_rate: int) -> bytes:
        try:
            wav = parse_wav(audio)
        except ValueError as exc:
            raise ProviderError(f"{PRODUCT} returned a broken WAV file ({exc})") from None
        expected = (WAVE_FORMATS[self._encoding], 1, sample_rate)
        if (wav.format_tag, wav.channels, wav.sample_rate) != expected:
            raise ProviderError(f"{PRODUCT} returned WAV format {wav.format_tag}, {wav.channels} channel(s) at "
                                f"{wav.sample_rate} Hz for a request of {self._encoding} mono at {sample_rate} Hz")
        return wav.payload


def _language_of(voice: str) -> str:
    """The BCP-47 code a Google voice name begins with: "en-US-Standard-C" -> "en-US"."""
    parts = voice.split("-")
    if len(parts) < 3:
        raise ProviderError(f"{PRODUCT} cannot tell the language of voice {voice!r}: set the language too")
    return f"{parts[0]}-{parts[1]}"
