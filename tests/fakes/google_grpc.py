"""A fake Google Cloud Speech-to-Text and Text-to-Speech on loopback, over real gRPC.

It serves the methods the real client libraries call, on their real paths:

- ``/google.cloud.speech.v1.Speech/StreamingRecognize``: the first request must carry the
  ``streaming_config`` (as the service insists); every audio request after it is answered
  with an interim result "N bytes so far", and the half-close with one final result
  "N bytes", N being all the audio this stream received, so a test can add up what every
  stream heard.
- ``/google.cloud.texttospeech.v1.TextToSpeech/SynthesizeSpeech``: a 440 Hz tone, 20 ms
  per character of text, at the requested rate: LINEAR16 and MULAW wrapped in a WAV
  header as Google wraps them (the mu-law one with the 18-byte ``fmt`` chunk and the
  ``fact`` chunk that non-PCM WAV files carry), PCM bare.
- ``/google.cloud.texttospeech.v1.TextToSpeech/StreamingSynthesize``: the same tone for
  each text input, headerless, in several responses.

google-cloud-speech and google-cloud-texttospeech are proto-plus libraries and ship no
generated ``*_pb2_grpc`` servicers, so the methods are registered with
``grpc.method_handlers_generic_handler`` and the libraries' own message classes'
``serialize``/``deserialize``: what the fake reads is exactly what the client wrote.

Every call is recorded (config, audio, requests, how it ended) and can be scripted to fail
with a gRPC status or to hold its answer until the client cancels, so a test can see a
cancellation reach the server. The server runs on grpc's own thread pool (one worker per
open call), which is why the records use ``threading`` events.
"""

from __future__ import annotations

import math
import struct
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import trio
from google.cloud.speech_v1.types import cloud_speech
from google.cloud.texttospeech_v1.types import cloud_tts

if sys.version_info >= (3, 13):
    import audioop
else:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop

SPEECH_SERVICE = "google.cloud.speech.v1.Speech"
TTS_SERVICE = "google.cloud.texttospeech.v1.TextToSpeech"
#: Tone length per character of text to synthesise.
MS_PER_CHAR = 20
TONE_HZ = 440
#: Google's rate when a request names none (Standard voices are 24 kHz).
DEFAULT_TTS_RATE = 24000
#: Streaming synthesis sends a text's audio in this many responses (the last may be short).
STREAM_PIECES = 3
#: How long a test waits for something to happen (a bound on a hang, not a timing).
WAIT = 10.0
#: How often :func:`until` looks.
POLL = 0.005
#: WAVE_FORMAT_PCM and WAVE_FORMAT_MULAW (RFC 2361).
_WAVE_PCM = 1
_WAVE_MULAW = 7


@dataclass(frozen=True)
class Failure:
    """A scripted gRPC status, raised once the call has received ``after_bytes`` of audio
    (or at once, for TTS)."""

    code: grpc.StatusCode
    details: str
    after_bytes: int = 0


@dataclass(eq=False)
class Call:
    """One call as the fake saw it."""

    #: RecognitionConfig / SynthesizeSpeechRequest / StreamingSynthesizeConfig, as received.
    config: object = None
    #: Speech: the audio, concatenated. TTS: the audio payload sent (no header), concatenated.
    audio: bytearray = field(default_factory=bytearray)
    #: Speech: the size of each audio request.
    sizes: list[int] = field(default_factory=list)
    #: StreamingSynthesize: each text input in order.
    texts: list[str] = field(default_factory=list)
    #: The request stream ended (speech, streaming synthesis): the client half-closed, or
    #: cancelled (grpc's request iterator may end either way; ``cancelled`` tells them apart).
    requests_ended: threading.Event = field(default_factory=threading.Event)
    #: The call is over, however it ended.
    done: threading.Event = field(default_factory=threading.Event)
    #: The client cancelled it (set before ``done``).
    cancelled: bool = False
    #: The fake got its answer out (its last response sent, or its own error status).
    answered: bool = False

    def _ended(self) -> None:
        # gRPC runs the callbacks once the call is over. A call the fake did not get its
        # answer out on was ended by the client: grpc resumes a response generator only
        # once the previous response was sent and the call is still up.
        self.cancelled = not self.answered
        self.done.set()


class _Service:
    """What both fakes share: the call log and the script for the next calls."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        #: Applied to every following call until reset.
        self.failure: Failure | None = None
        #: Answer nothing after the half-close (speech) or after the first audio (TTS) until
        #: the client cancels.
        self.hold: bool = False
        self._lock = threading.Lock()

    def _begin(self, context: grpc.ServicerContext) -> Call:
        call = Call()
        with self._lock:
            self.calls.append(call)
        context.add_callback(call._ended)
        return call

    def _hold(self, call: Call) -> None:
        """Block until the client goes away (``done`` is set by gRPC's callback)."""
        if not call.done.wait(WAIT):
            call.answered = True  # the client never went away: not a cancellation

    @staticmethod
    def _first(call: Call, request: object, context: grpc.ServicerContext) -> bool:
        """Whether ``request`` opens the stream: the first one must carry the
        ``streaming_config``, as the service insists (else the call is aborted)."""
        if call.config is not None:
            return False
        if "streaming_config" not in request:
            call.answered = True
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "first request must carry streaming_config")
        call.config = request.streaming_config
        return True

    @staticmethod
    def _fail(call: Call, context: grpc.ServicerContext, failure: Failure) -> None:
        call.answered = True
        context.abort(failure.code, failure.details)


class FakeSpeech(_Service):
    """``Speech/StreamingRecognize``."""

    def __init__(self) -> None:
        super().__init__()
        #: End the next call on our own (a final result, status OK) once it has this much
        #: audio, as the service may end a stream before the client half-closes it.
        self.end_after_bytes: int | None = None

    def streaming_recognize(self, requests: Iterator[cloud_speech.StreamingRecognizeRequest],
                            context: grpc.ServicerContext) -> Iterator[cloud_speech.StreamingRecognizeResponse]:
        call = self._begin(context)
        failure = self.failure
        try:
            for request in requests:
                if self._first(call, request, context):
                    continue
                if "streaming_config" in request:
                    call.answered = True
                    context.abort(grpc.StatusCode.INVALID_ARGUMENT, "streaming_config sent twice")
                call.audio += request.audio_content
                call.sizes.append(len(request.audio_content))
                if failure is not None and len(call.audio) >= failure.after_bytes:
                    self._fail(call, context, failure)
                if self.end_after_bytes is not None and len(call.audio) >= self.end_after_bytes:
                    self.end_after_bytes = None
                    break
                if call.config.interim_results:
                    yield _response(f"{len(call.audio)} bytes so far", final=False)
        except grpc.RpcError:  # the client cancelled while we waited for a request
            return
        call.requests_ended.set()
        if self.hold:
            self._hold(call)
            return
        yield _response(f"{len(call.audio)} bytes", final=True)
        call.answered = True  # grpc asks for more only once the final one went out


class FakeTextToSpeech(_Service):
    """``TextToSpeech/SynthesizeSpeech`` and ``TextToSpeech/StreamingSynthesize``."""

    def __init__(self) -> None:
        super().__init__()
        #: s16le of every tone made, in order (what the client must end up with).
        self.tones: list[bytes] = []

    def synthesize_speech(self, request: cloud_tts.SynthesizeSpeechRequest,
                          context: grpc.ServicerContext) -> cloud_tts.SynthesizeSpeechResponse:
        call = self._begin(context)
        call.config = request
        call.texts.append(request.input.text)
        if self.failure is not None:
            self._fail(call, context, self.failure)
        if self.hold:
            self._hold(call)
            return cloud_tts.SynthesizeSpeechResponse()
        audio = request.audio_config
        rate = audio.sample_rate_hertz or DEFAULT_TTS_RATE
        payload = self._payload(request.input.text, rate, audio.audio_encoding)
        call.audio += payload
        call.answered = True
        return cloud_tts.SynthesizeSpeechResponse(audio_content=_wav(payload, rate, audio.audio_encoding))

    def streaming_synthesize(self, requests: Iterator[cloud_tts.StreamingSynthesizeRequest],
                             context: grpc.ServicerContext) -> Iterator[cloud_tts.StreamingSynthesizeResponse]:
        call = self._begin(context)
        try:
            for request in requests:
                if self._first(call, request, context):
                    if self.failure is not None:
                        self._fail(call, context, self.failure)
                    continue
                call.texts.append(request.input.text)
                audio = call.config.streaming_audio_config
                payload = self._payload(request.input.text, audio.sample_rate_hertz or DEFAULT_TTS_RATE,
                                        audio.audio_encoding)
                piece = -(-len(payload) // STREAM_PIECES)
                piece += piece % 2  # whole samples, whatever the encoding
                for start in range(0, len(payload), piece):
                    call.audio += payload[start:start + piece]
                    yield cloud_tts.StreamingSynthesizeResponse(audio_content=payload[start:start + piece])
                    if self.hold:
                        self._hold(call)
                        return
        except grpc.RpcError:
            return
        call.requests_ended.set()
        call.answered = True

    def _payload(self, text: str, rate: int, encoding: cloud_tts.AudioEncoding) -> bytes:
        """The tone for ``text``, recorded as s16le, returned encoded as asked."""
        samples = rate * MS_PER_CHAR * len(text) // 1000
        tone = struct.pack(f"<{samples}h", *(int(8000 * math.sin(2 * math.pi * TONE_HZ * n / rate))
                                             for n in range(samples)))
        if encoding == cloud_tts.AudioEncoding.MULAW:
            encoded = audioop.lin2ulaw(tone, 2)
            self.tones.append(audioop.ulaw2lin(encoded, 2))
            return encoded
        self.tones.append(tone)
        return tone


def _response(text: str, *, final: bool) -> cloud_speech.StreamingRecognizeResponse:
    result = cloud_speech.StreamingRecognitionResult(
        alternatives=[cloud_speech.SpeechRecognitionAlternative(transcript=text, confidence=0.9 if final else 0.0)],
        is_final=final, stability=0.0 if final else 0.5)
    return cloud_speech.StreamingRecognizeResponse(results=[result])


def _wav(payload: bytes, rate: int, encoding: cloud_tts.AudioEncoding) -> bytes:
    """``payload`` as the service returns it: LINEAR16 and MULAW in a WAV file, PCM bare."""
    if encoding == cloud_tts.AudioEncoding.LINEAR16:
        fmt = struct.pack("<HHIIHH", _WAVE_PCM, 1, rate, rate * 2, 2, 16)
        chunks = [(b"fmt ", fmt)]
    elif encoding == cloud_tts.AudioEncoding.MULAW:
        fmt = struct.pack("<HHIIHHH", _WAVE_MULAW, 1, rate, rate, 1, 8, 0)
        chunks = [(b"fmt ", fmt), (b"fact", struct.pack("<I", len(payload)))]
    else:
        return payload
    body = b"WAVE" + b"".join(tag + struct.pack("<I", len(data)) + data for tag, data in chunks)
    body += b"data" + struct.pack("<I", len(payload)) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


class FakeGoogle:
    """Both services on one gRPC server at 127.0.0.1:<free port>."""

    def __init__(self) -> None:
        self.speech = FakeSpeech()
        self.tts = FakeTextToSpeech()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        self._server.add_generic_rpc_handlers((
            grpc.method_handlers_generic_handler(SPEECH_SERVICE, {
                "StreamingRecognize": grpc.stream_stream_rpc_method_handler(
                    self.speech.streaming_recognize,
                    request_deserializer=cloud_speech.StreamingRecognizeRequest.deserialize,
                    response_serializer=cloud_speech.StreamingRecognizeResponse.serialize),
            }),
            grpc.method_handlers_generic_handler(TTS_SERVICE, {
                "SynthesizeSpeech": grpc.unary_unary_rpc_method_handler(
                    self.tts.synthesize_speech,
                    request_deserializer=cloud_tts.SynthesizeSpeechRequest.deserialize,
                    response_serializer=cloud_tts.SynthesizeSpeechResponse.serialize),
                "StreamingSynthesize": grpc.stream_stream_rpc_method_handler(
                    self.tts.streaming_synthesize,
                    request_deserializer=cloud_tts.StreamingSynthesizeRequest.deserialize,
                    response_serializer=cloud_tts.StreamingSynthesizeResponse.serialize),
            }),
        ))
        port = self._server.add_insecure_port("127.0.0.1:0")
        #: host:port for a provider's ``endpoint``.
        self.endpoint = f"127.0.0.1:{port}"

    def __enter__(self) -> FakeGoogle:
        self._server.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.stop(grace=None)


async def wait_for(event: threading.Event) -> None:
    """Until the fake's thread sets ``event`` (an AssertionError if it never does)."""
    assert await trio.to_thread.run_sync(event.wait, WAIT, abandon_on_cancel=True), "the fake never got there"


async def until(predicate: Callable[[], object]) -> None:
    """Until ``predicate()`` holds: for state another thread changes, with nothing to wait on."""
    with trio.fail_after(WAIT):
        while not predicate():
            await trio.sleep(POLL)
