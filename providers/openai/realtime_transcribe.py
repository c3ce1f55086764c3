"""Speech recognition on an OpenAI Realtime transcription session (``?intent=transcription``,
``session.update`` with ``type: "transcription"``), one WebSocket per utterance.

Why one socket per utterance, opened by :meth:`~RealtimeTranscriptionStream.finish`:

- trivox's VAD cuts the caller's speech into utterances, so the service's own turn
  detection is off and each utterance is one committed buffer: a session per utterance
  needs no bookkeeping of which transcript belongs to which turn, and a failure costs
  one utterance, never the next.
- With turn detection off the service starts transcribing at the commit, so its
  interim and final texts all come after ``finish()`` however early the socket opens.
- A trio-websocket connection lives inside an ``async with`` (its reader task needs a
  nursery), and the ASR protocol gives a stream no nursery: one cannot be opened in
  ``open_stream`` and closed in ``aclose`` without breaking the nesting of cancel scopes
  (the dialog closes the stream inside a shielded scope). So ``send_audio`` keeps the
  utterance and ``finish`` runs the whole session inside one ``async with``; what this
  costs is the connection set-up, paid after the caller stops instead of during speech.

Cancelling ``finish`` closes the socket (the ``async with`` exits).
"""

from __future__ import annotations

import logging

import trio

from media.audio import SAMPLE_WIDTH

from ..base import ProviderError, Transcript
from .client import OpenAISettings
from .realtime import open_realtime
from .realtime_protocol import TranscriptionProtocol

log = logging.getLogger("trivox.openai.realtime")

#: Longest utterance kept; later audio is dropped (a VAD that never hears silence on a
#: noisy line must not grow a buffer without bound).
MAX_UTTERANCE_MS = 120_000
#: Caller audio per ``input_audio_buffer.append`` when the utterance is sent.
APPEND_MS = 1_000


class RealtimeTranscriptionStream:
    """One utterance; ``partial`` holds the latest interim text while ``finish`` waits."""

    def __init__(self, settings: OpenAISettings, model: str, language: str, sample_rate: int) -> None:
        self._settings = settings
        self._protocol = TranscriptionProtocol(model, language, sample_rate)
        self._max_bytes = sample_rate * SAMPLE_WIDTH * MAX_UTTERANCE_MS // 1000
        self._append_bytes = sample_rate * SAMPLE_WIDTH * APPEND_MS // 1000
        self._utterance = bytearray()
        self._open = True
        self.partial = ""

    async def send_audio(self, pcm: bytes) -> None:
        self._check_open()
        room = self._max_bytes - len(self._utterance)
        if len(pcm) > room > 0:
            log.warning("OpenAI Realtime transcription: utterance longer than %d s, the rest is dropped",
                        MAX_UTTERANCE_MS // 1000)
        self._utterance += pcm[:max(room, 0)]
        await trio.lowlevel.checkpoint()

    async def finish(self) -> Transcript:
        """Send the utterance, commit it, and wait for its final transcript."""
        self._check_open()
        self._open = False
        utterance, self._utterance = bytes(self._utterance), bytearray()
        if not utterance:
            await trio.lowlevel.checkpoint()
            return Transcript("", final=True)
        protocol = self._protocol
        async with open_realtime(self._settings, intent="transcription") as socket:
            await socket.send(protocol.session_update())
            for start in range(0, len(utterance), self._append_bytes):
                await socket.send(protocol.append_audio(utterance[start:start + self._append_bytes]))
            await socket.send(protocol.commit())
            with trio.move_on_after(self._settings.timeout) as waiting:
                while True:
                    transcript = protocol.receive(await socket.receive())
                    if transcript is None:
                        continue
                    if transcript.final:
                        return transcript
                    self.partial = transcript.text
                    waiting.deadline = trio.current_time() + self._settings.timeout
        raise ProviderError(f"OpenAI Realtime transcription: no transcript within {self._settings.timeout:g} s "
                            "of the last event: raise openai.timeout or check the service status")

    async def aclose(self) -> None:
        """Forget the utterance; nothing is open between calls, so this is all there is."""
        self._open = False
        self._utterance = bytearray()
        await trio.lowlevel.checkpoint()

    def _check_open(self) -> None:
        if not self._open:
            raise trio.ClosedResourceError("this recognition stream is finished or closed")


class OpenAIRealtimeTranscriber:
    """The ASR protocol on OpenAI's Realtime transcription sessions."""

    name = "openai-realtime"

    def __init__(self, settings: OpenAISettings, model: str = "gpt-4o-mini-transcribe", language: str = "") -> None:
        self._settings = settings
        self.model = model
        #: ISO-639-1 ("en"); empty lets the model detect the language.
        self.language = language

    async def open_stream(self, sample_rate: int) -> RealtimeTranscriptionStream:
        if sample_rate <= 0:
            raise ValueError(f"sample rate must be positive, not {sample_rate}")
        await trio.lowlevel.checkpoint()
        return RealtimeTranscriptionStream(self._settings, self.model, self.language, sample_rate)
