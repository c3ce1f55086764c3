"""Google Cloud Speech-to-Text (v1) streaming recognition.

One utterance is one ``StreamingRecognize`` call: a first request with the
``StreamingRecognitionConfig`` (interim results on), then the caller's audio as it comes,
then a half-close, after which the service sends its last final results and ends the call.
The final transcript is every final result, joined.

Google ends a stream after about five minutes (305 s, "Exceeded maximum allowed stream
duration"), so an utterance that could outlast one (a caller reading out a long list, a
dialog that keeps one stream open) is carried over several calls, one after the other:
the *segments*. Where to cut, and what happens to the audio around the cut:

- Every byte of audio goes to exactly one segment. The old segment is half-closed at the
  cut, and Google finalises all the audio a stream received when it is half-closed, so
  nothing is lost; and nothing is sent twice. Re-sending the audio that no final result
  had yet covered (Google's "endless streaming" sample does) makes the service
  transcribe that overlap twice, and taking the duplicate words back out by their
  result end times is guesswork at the seam. The old segment drains while the new one
  already receives audio, and each segment's finals are kept apart, so the transcript is
  in spoken order whichever finishes first.
- What a cut can cost is a word spoken across it, which each side hears only half of. So
  the cut is made at a result boundary when it can be: from ``SEEK_CUT_AT`` of the limit
  on, the first final result (the service just closed a phrase, at a pause) makes the
  cut, with the next audio. A caller who never pauses is cut at ``FORCE_CUT_AT``
  whatever, which leaves the old segment the rest of the limit (15 s of 305) to return
  its finals.

:class:`Recognition` is that bookkeeping, sans-IO: responses and clock values in, the
transcript and "cut now" out. :class:`GoogleSpeechStream` is the Trio side: it encodes the
audio, makes the calls through :class:`~providers.google.thread_stream.GrpcStream` and
cancels them on every way out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import grpc
import trio

from media.codecs import PCMU
from media.resample import Resampler

from ..base import ProviderError, Transcript
from . import connect, one_line, rpc_failure, status_failure
from .thread_stream import GrpcStream

try:
    from google.cloud import speech_v1
    from google.rpc import code_pb2
except ImportError:
    raise ProviderError("Google Speech-to-Text needs the google extra: pip install 'trivox[google]'") from None

PRODUCT = "Google Speech-to-Text"
#: Seconds Google lets one StreamingRecognize call run.
STREAM_LIMIT = 305.0
#: Shares of the limit: from the first, cut at the next final result; at the second, cut.
SEEK_CUT_AT = 0.85
FORCE_CUT_AT = 0.95
#: "Each request in the stream is limited to 25 KB of audio" (Speech-to-Text quotas).
MAX_REQUEST_AUDIO = 25_000
#: G.711 is 8 kHz: MULAW audio goes to Google at this rate.
MULAW_RATE = 8000
ENCODINGS = ("LINEAR16", "MULAW")


# --- sans-IO: what the segments recognised, and when to cut -------------------------------


@dataclass
class _Segment:
    opened_at: float
    finals: list[str] = field(default_factory=list)
    #: The service's current guess at the words after the last final result.
    interim: str = ""
    #: A final result came once the segment was old enough to be cut: cut now.
    at_boundary: bool = False


class Recognition:
    """One utterance over successive streams: their transcripts, and when to cut to a new one.

    Times are the caller's clock values in seconds (``trio.current_time()``); responses are
    ``StreamingRecognizeResponse`` messages, or anything with their attributes.
    """

    def __init__(self, stream_limit: float = STREAM_LIMIT) -> None:
        if stream_limit <= 0:
            raise ValueError(f"stream limit must be positive, not {stream_limit}")
        self.stream_limit = stream_limit
        self._segments: list[_Segment] = []

    def open_segment(self, now: float) -> int:
        """A new segment starts (its stream is opened); its index for :meth:`receive`."""
        self._segments.append(_Segment(now))
        return len(self._segments) - 1

    def cut_due(self, now: float) -> bool:
        """Must the current segment be closed and a new one opened before more audio?"""
        current = self._segments[-1]
        return current.at_boundary or now - current.opened_at >= FORCE_CUT_AT * self.stream_limit

    def receive(self, index: int, response: Any, now: float) -> None:
        """A response of segment ``index``; a ProviderError if it reports a failure."""
        if response.error.code != code_pb2.OK:
            raise status_failure(PRODUCT, code_pb2.Code.Name(response.error.code), response.error.message)
        if not response.results:  # a speech event, or billing information
            return
        segment = self._segments[index]
        finals, guesses = [], []
        for result in response.results:
            text = one_line(result.alternatives[0].transcript) if result.alternatives else ""
            if text:
                (finals if result.is_final else guesses).append(text)
        segment.finals += finals
        segment.interim = " ".join(guesses)
        if finals and now - segment.opened_at >= SEEK_CUT_AT * self.stream_limit:
            segment.at_boundary = True

    @property
    def partial(self) -> str:
        """The words heard and not yet final, in spoken order."""
        return " ".join(segment.interim for segment in self._segments if segment.interim)

    @property
    def text(self) -> str:
        """Every final result so far, in spoken order."""
        return " ".join(text for segment in self._segments for text in segment.finals)


# --- Trio ---------------------------------------------------------------------------------


class _Wire:
    """The call's s16le as the configured encoding carries it: LINEAR16 at the call's rate,
    or MULAW at 8 kHz (resampled first if the call runs faster)."""

    def __init__(self, encoding: str, sample_rate: int) -> None:
        self.rate = MULAW_RATE if encoding == "MULAW" else sample_rate
        self._resampler = Resampler(sample_rate, self.rate)
        self._compand: Callable[[bytes], bytes] = PCMU.transcoder().encode if encoding == "MULAW" else bytes

    def encode(self, pcm: bytes) -> bytes:
        return self._compand(self._resampler.process(pcm))

    def flush(self) -> bytes:
        return self._compand(self._resampler.flush())


class GoogleSpeechStream:
    """One utterance, on one or more StreamingRecognize calls. A single task feeds it."""

    def __init__(self, method: Callable[..., Any], config: speech_v1.StreamingRecognitionConfig,
                 wire: _Wire, stream_limit: float) -> None:
        self._method = method
        self._config = config
        self._wire = wire
        self._recognition = Recognition(stream_limit)
        self._segments: list[GrpcStream[speech_v1.StreamingRecognizeRequest, Any]] = []
        self._finishing = False
        self._closed = False
        self._open_segment()

    @property
    def partial(self) -> str:
        """The latest interim text: what the service heard so far and may still revise."""
        return self._recognition.partial

    async def send_audio(self, pcm: bytes) -> None:
        """Queue more of the utterance; never waits for the service."""
        self._check_open()
        self._check_failed()
        self._send(self._wire.encode(pcm))
        await trio.lowlevel.checkpoint()

    async def finish(self) -> Transcript:
        """Half-close, wait for the last final results: the whole final transcript."""
        self._check_open()
        self._check_failed()
        self._finishing = True
        self._send(self._wire.flush())
        self._segments[-1].close()
        try:
            for segment in self._segments:
                await segment.wait()
        except BaseException:  # cancelled: nobody will read the answer
            self._cancel()
            raise
        self._check_failed()
        return Transcript(self._recognition.text, final=True)

    async def aclose(self) -> None:
        """Cancel whatever is still running and wait for its reader threads; idempotent."""
        self._closed = True
        self._cancel()
        with trio.CancelScope(shield=True):  # bounded: a cancelled call ends at once
            for segment in self._segments:
                await segment.wait()

    def _open_segment(self) -> None:
        index = self._recognition.open_segment(trio.current_time())
        first = speech_v1.StreamingRecognizeRequest(streaming_config=self._config)
        self._segments.append(GrpcStream(self._method, first, partial(self._receive, index)))

    def _receive(self, index: int, response: speech_v1.StreamingRecognizeResponse) -> None:
        self._recognition.receive(index, response, trio.current_time())

    def _send(self, audio: bytes) -> None:
        if not audio:
            return
        current = self._segments[-1]
        # A stream the service ended on its own (with no error) is replaced like an old one.
        if current.ended or self._recognition.cut_due(trio.current_time()):
            current.close()  # it finalises what it has while the next one listens
            self._open_segment()
        for request in _requests(audio):
            self._segments[-1].send(request)

    def _cancel(self) -> None:
        for segment in self._segments:
            segment.cancel()

    def _check_open(self) -> None:
        if self._closed or self._finishing:
            raise trio.ClosedResourceError("this recognition stream is finished or closed")

    def _check_failed(self) -> None:
        for segment in self._segments:
            error = segment.error
            if error is None:
                continue
            self._cancel()
            if isinstance(error, ProviderError):
                raise error
            if isinstance(error, grpc.RpcError):
                raise rpc_failure(PRODUCT, error) from None
            raise ProviderError(f"{PRODUCT} failed: {type(error).__name__}: {one_line(error)}") from None


def _requests(audio: bytes) -> Iterator[speech_v1.StreamingRecognizeRequest]:
    for start in range(0, len(audio), MAX_REQUEST_AUDIO):
        yield speech_v1.StreamingRecognizeRequest(audio_content=audio[start:start + MAX_REQUEST_AUDIO])


class GoogleSpeech:
    """The ASR protocol on Google Cloud Speech-to-Text v1, streaming with interim results.

    ``model`` and ``use_enhanced`` as the service names them ("phone_call" with enhanced
    is its model for telephone audio); ``encoding`` "LINEAR16" sends the call's PCM as it
    is, "MULAW" sends G.711 mu-law at 8 kHz (half the bytes). ``credentials`` is a
    service-account JSON file (empty: Application Default Credentials), ``endpoint`` a
    "host:port" override, and ``stream_limit`` the seconds Google lets one stream run.
    """

    name = "google"

    def __init__(self, language: str = "en-US", model: str = "phone_call", use_enhanced: bool = True,
                 encoding: str = "LINEAR16", credentials: str = "", endpoint: str = "",
                 stream_limit: float = STREAM_LIMIT) -> None:
        if encoding not in ENCODINGS:
            raise ProviderError(f"{PRODUCT} encoding must be one of {', '.join(ENCODINGS)}, not {encoding!r}")
        if stream_limit <= 0:
            raise ProviderError(f"{PRODUCT} stream_limit must be positive, not {stream_limit}")
        self._language = language
        self._model = model
        self._use_enhanced = use_enhanced
        self._encoding = encoding
        self._stream_limit = stream_limit
        self._client = connect(speech_v1.SpeechClient, PRODUCT, credentials, endpoint)

    async def open_stream(self, sample_rate: int) -> GoogleSpeechStream:
        if sample_rate <= 0:
            raise ValueError(f"sample rate must be positive, not {sample_rate}")
        wire = _Wire(self._encoding, sample_rate)
        config = speech_v1.StreamingRecognitionConfig(
            config=speech_v1.RecognitionConfig(
                encoding=self._encoding, sample_rate_hertz=wire.rate, language_code=self._language,
                model=self._model, use_enhanced=self._use_enhanced),
            interim_results=True)
        await trio.lowlevel.checkpoint()
        return GoogleSpeechStream(self._client.transport.streaming_recognize, config, wire, self._stream_limit)
