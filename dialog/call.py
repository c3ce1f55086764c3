"""The Call API: what a dialog plugin sees of one phone call.

A dialog is ``async def handle(call: Call)``. It runs inside the call's nursery beside the
call's "ears", a task that runs every inbound frame through the VAD, streams each
utterance into an ASR stream and queues the final transcripts for ``listen()``.

Barge-in is a cancellation. ``say()`` speaks inside its own cancel scope; when the ears
hear the caller start talking while that scope is open, they cancel it and flush the
pacer. ``say()`` then records in the agent's history only the part of the text the
caller actually heard, measured by the milliseconds the pacer played.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing
from functools import partial
from dataclasses import dataclass, field

import trio

from media.ambience import AmbienceSound
from media.audio import FRAME_MS, duration_ms
from media.pacer import Pacer
from media.recorder import CallRecorder
from media.vad import SpeechEnd, SpeechStart, VadBatcher, VadConfig, VadSegmenter
from providers.base import ASR, LLM, STS, TTS, ProviderError

from .agent import Agent
from .heard import Spoken, heard_text
from .leg import Leg
from .realtime import RealtimeSettings, converse
from .sentences import sentences
from .tools import Tool
from .transcript import Transcript

log = logging.getLogger("trivox.dialog")

#: How far synthesis runs ahead of what the caller hears: the next sentence goes to TTS
#: once less than this is left to play, so a barge-in discards little synthesised audio.
TTS_LEAD_MS = 1500
#: Caller audio handed to the recogniser at a time: Google asks for about 100 ms per
#: streaming request, and a hop per chunk instead of per frame costs a fifth as much.
ASR_CHUNK_MS = 100
#: Finished transcripts waiting for listen(); more than this and the oldest is useless.
TRANSCRIPT_QUEUE = 16


@dataclass(frozen=True)
class CallServices:
    """Everything a call needs that outlives it: providers and settings."""

    #: None: no recognition (a speech-to-speech call); the VAD still runs for barge-in.
    asr: ASR | None
    tts: TTS
    vad: VadConfig = field(default_factory=VadConfig)
    transcripts_dir: str | None = None
    greeting: str = ""
    listen_timeout: float = 10.0
    #: Scores all calls' VAD windows in shared model runs; None: each call runs its own.
    vad_batcher: VadBatcher | None = None
    #: Looped under the agent, by call rate (none: no ambience).
    ambience: dict[int, AmbienceSound] = field(default_factory=dict)
    #: Noise for the agent's silences, by call rate (none: silence).
    comfort_noise: dict[int, AmbienceSound] = field(default_factory=dict)
    #: Where each call's stereo recording goes; None: not recorded.
    recordings_dir: str | None = None
    #: The agent's language model (``call.agent``); None: the config names none.
    llm: LLM | None = None
    #: The agent's system prompt.
    instructions: str = ""
    #: What the model may call, by name: the built-in hangup (and transfer), and the
    #: user's (``dialog.tools.by_name`` builds it, refusing two tools of one name).
    tools: Mapping[str, Tool] = field(default_factory=dict)
    #: Speech to speech (``call.converse``); None: the config names none.
    sts: STS | None = None
    realtime: RealtimeSettings = field(default_factory=RealtimeSettings)


class CallEnded(Exception):
    """Raised by Call methods used after the call is over."""


class Call:
    """One phone call, as a dialog drives it."""

    def __init__(self, leg: Leg, services: CallServices, nursery: trio.Nursery,
                 recorder: CallRecorder | None = None) -> None:
        """``recorder``: the call's recording, which the ears give the caller's audio."""
        self.id = leg.call_id
        self.caller = leg.caller
        self.services = services
        #: The conversation as the caller experienced it: {"role", "content"} dicts,
        #: with the agent's turns cut to what was actually played.
        self.history: list[dict[str, str]] = []
        self.transcript = Transcript(services.transcripts_dir, leg.call_id)
        self._leg = leg
        self._nursery = nursery
        self._recorder = recorder
        self._answered = False
        self._speaking: trio.CancelScope | None = None
        send, self._transcripts = trio.open_memory_channel[str](TRANSCRIPT_QUEUE)
        self._transcript_send = send
        self._agent: Agent | None = None
        #: What a tool asked to happen once the agent's reply has been heard.
        self._after_turn: Callable[[], Awaitable[object]] | None = None
        #: Each caller frame also goes to these (a speech-to-speech session's input).
        self._taps: list[Callable[[bytes], None]] = []
        self._speech_listeners: list[Callable[[bool], Awaitable[None]]] = []
        self._recognising = True  # utterances go to the ASR (not while converse() runs)

    @property
    def sample_rate(self) -> int:
        return self._leg.sample_rate

    # --- the API --------------------------------------------------------------------

    async def answer(self) -> None:
        """Connect the call. Idempotent."""
        if not self._answered:
            await self._leg.answer()
            self._answered = True
            await self.transcript.write("answered", caller=self.caller)

    async def say(self, text: str) -> bool:
        """Speak ``text``; returns False if the caller interrupted it (barge-in).

        Returns once the caller has heard the last frame, so a dialog can hang up right
        after a goodbye without cutting it off.
        """
        return await self.say_stream(_once(text))

    async def say_stream(self, pieces: AsyncIterable[str]) -> bool:
        """Speak text that is still being written (a language model's reply): each
        sentence goes to TTS as soon as it is complete (and less than ``TTS_LEAD_MS``
        remains to play), so the caller hears the first while the rest is on its way.
        Returns False if the caller interrupted.

        ``pieces`` is consumed inside the speaking scope: a barge-in cancels it too (and
        so closes a model's request), and the history keeps only what was heard. When
        the text's source or the TTS fails (a ProviderError), what was already
        synthesised still plays out and is recorded, and then the error is raised.
        """
        await self.answer()
        pacer = self._leg.pacer
        spoken: list[Spoken] = []
        failure: ProviderError | None = None
        with trio.CancelScope() as scope:
            self._speaking = scope
            try:
                pacer.start_utterance()
                try:
                    async with aclosing(sentences(pieces)) as stream:
                        async for sentence in stream:
                            await pacer.wait_below(TTS_LEAD_MS)
                            current = Spoken(sentence)
                            spoken.append(current)
                            speech = self.services.tts.synthesize(sentence, self.sample_rate)
                            async with aclosing(speech) as audio:  # closed at once on a barge-in
                                async for chunk in audio:
                                    current.ms += duration_ms(chunk, self.sample_rate)
                                    pacer.enqueue(chunk)
                            current.whole = True
                except ProviderError as exc:
                    failure = exc
                pacer.end_utterance()
                await pacer.wait_idle()
            finally:
                self._speaking = None
        if not scope.cancelled_caught:
            text = " ".join(part.text for part in spoken if part.whole or failure is None)
            if text:
                await self._record_agent(text, text, interrupted=False)
            if failure is not None:
                raise failure
            return True
        text = " ".join(part.text for part in spoken)
        heard = heard_text(spoken, pacer.played_ms)
        log.info("barge-in after %d ms of agent speech", pacer.played_ms)
        await self._record_agent(text, heard, interrupted=True)
        return False

    async def listen(self, timeout: float | None = None) -> str | None:
        """The caller's next utterance as text, or None after ``timeout`` seconds of nothing.

        Empty recognitions (a cough, a click) are skipped.
        """
        await self.answer()
        limit = self.services.listen_timeout if timeout is None else timeout
        with trio.move_on_after(limit):
            while True:
                text = await self._transcripts.receive()
                if text:
                    return text
        return None

    async def transfer(self, target: str) -> bool:
        """Blind-transfer the caller to ``target`` (e.g. "sip:200@pbx"), then hang up.

        Returns False, with the call still up, when the transfer failed or the transport
        cannot transfer (AudioSocket); the dialog can then apologise and carry on.
        """
        await self.answer()
        await self.transcript.write("transfer", target=target)
        if not await self._leg.transfer(target):
            await self.transcript.write("transfer-failed", target=target)
            return False
        await self.hangup()
        return True  # not reached: hangup() ends the call

    async def collect_digits(self, count: int = 1, timeout: float = 5.0, terminator: str = "#") -> str:
        """Up to ``count`` DTMF digits, ending early at ``terminator`` (not returned) or after
        ``timeout`` seconds without a digit. Digits pressed before the call reached this
        point are kept and count (type-ahead)."""
        await self.answer()
        digits = ""
        while len(digits) < count:
            with trio.move_on_after(timeout) as waited:
                digit = await self._leg.digits.receive()
            if waited.cancelled_caught:
                break
            if digit == terminator:
                break
            digits += digit
        if digits:
            await self.transcript.write("dtmf", digits=digits)
        return digits

    async def send_digits(self, digits: str) -> bool:
        """Press keys towards the caller (an IVR on the far end, a voicemail menu): RFC
        4733 events on a SIP call, sent in place of agent audio; returns once they are out.
        Returns False where the transport cannot send digits (AudioSocket, or a caller
        without telephone-event); raises ValueError for characters that are not digits."""
        await self.answer()
        sent = await self._leg.send_digits(digits)
        await self.transcript.write("dtmf-sent" if sent else "dtmf-not-sent", digits=digits)
        return sent

    async def hangup(self) -> None:
        """End the call. Nothing after this in the dialog runs."""
        await self.transcript.write("hangup", by="agent")
        await self._leg.hangup()
        self._nursery.cancel_scope.cancel()
        await trio.lowlevel.checkpoint()

    @property
    def pacer(self) -> Pacer:
        """The call's outgoing audio clock, for dialogs that bring their own audio (a
        speech-to-speech model): enqueue s16le at ``sample_rate``, flush on barge-in."""
        return self._leg.pacer

    def on_speech(self, listener: Callable[[bool], Awaitable[None]]) -> Callable[[], None]:
        """Tell ``listener`` when our VAD hears the caller start (True) and stop (False)
        talking; returns the way to stop. The ears await it, so it must be quick."""
        self._speech_listeners.append(listener)
        return lambda: self._speech_listeners.remove(listener)

    @property
    def agent(self) -> Agent:
        """The call's agent: ``await call.agent.respond()`` answers the caller out loud
        with the configured language model and tools."""
        if self._agent is None:
            if self.services.llm is None:
                raise RuntimeError("no language model is configured: set [llm] type")
            self._agent = Agent(self, self.services.llm, self.services.instructions, self.services.tools)
        return self._agent

    def hang_up_after_turn(self) -> None:
        """For a tool: end the call once the agent's reply has been heard."""
        self._after_turn = self.hangup

    def transfer_after_turn(self, target: str) -> None:
        """For a tool: transfer the caller once the agent's reply has been heard."""
        self._after_turn = partial(self.transfer, target)

    async def end_turn(self, *, heard: bool) -> None:
        """The agent's turn is over: do what a tool asked for, if the caller heard the
        reply to the end (an interrupted goodbye is not acted on: the caller has more to say)."""
        action, self._after_turn = self._after_turn, None
        if action is not None and heard:
            await action()

    async def converse(self) -> None:
        """Hand the call to the speech-to-speech model until it ends (see dialog.realtime)."""
        if self.services.sts is None:
            raise RuntimeError("no speech-to-speech model is configured: set [sts] type")
        # The service hears and transcribes the caller itself: our recogniser rests (the
        # VAD goes on, for turn_detection = "trivox").
        self._recognising = False
        try:
            await converse(self, self.services.sts, self.services.realtime)
        finally:
            self._recognising = True

    @property
    def digits(self) -> trio.MemoryReceiveChannel[str]:
        """The caller's key presses as they come, for a dialog that hands them on (a
        speech-to-speech service); ``collect_digits`` reads the same channel."""
        return self._leg.digits

    def tap(self, listener: Callable[[bytes], None]) -> Callable[[], None]:
        """Give ``listener`` every caller frame from now on; returns the way to stop."""
        self._taps.append(listener)
        return lambda: self._taps.remove(listener)

    # --- the ears ---------------------------------------------------------------------

    async def run_ears(self) -> None:
        """Inbound frames -> VAD -> one ASR stream per utterance -> ``listen()``.

        The VAD runs on every frame as it arrives; each utterance's audio goes to its ASR
        stream through a channel read by a task of its own, so a slow decode never delays
        the VAD, and so never delays a barge-in. The audio crosses in chunks of
        ``ASR_CHUNK_MS`` (what streaming services ask for), the rest at the turn's end.
        """
        batcher = self.services.vad_batcher
        scorer = batcher.stream(self.sample_rate) if batcher is not None else None
        vad = VadSegmenter(self.sample_rate, self.services.vad, scorer)
        preroll: deque[bytes] = deque(maxlen=max(1, math.ceil(vad.pre_roll_ms / FRAME_MS)))
        utterance: trio.MemorySendChannel[bytes] | None = None
        pending = bytearray()  # utterance audio not yet handed to the recogniser
        chunk = self.sample_rate * 2 * ASR_CHUNK_MS // 1000
        talking = False
        try:
            async for frame in self._leg.inbound:
                if self._recorder is not None:
                    self._recorder.caller(frame)
                for listener in self._taps:
                    listener(frame)
                if utterance is None:
                    preroll.append(frame)
                else:
                    pending += frame
                    if len(pending) >= chunk:
                        utterance.send_nowait(bytes(pending))
                        pending.clear()
                for event in await vad.feed(frame):
                    if isinstance(event, SpeechStart) and not talking:
                        talking = True
                        self._barge_in()
                        if self.services.asr is not None and self._recognising:
                            utterance, audio = trio.open_memory_channel[bytes](math.inf)
                            utterance.send_nowait(b"".join(preroll))
                            self._nursery.start_soon(self._recognise, self.services.asr, audio)
                        preroll.clear()
                    elif isinstance(event, SpeechEnd) and talking:
                        talking = False
                        if utterance is not None:
                            if pending:
                                utterance.send_nowait(bytes(pending))
                                pending.clear()
                            utterance.close()  # the recogniser finishes the turn
                            utterance = None
                    else:
                        continue
                    for listener in list(self._speech_listeners):
                        await listener(talking)
        finally:
            if utterance is not None:  # the call ended mid-utterance
                utterance.close()
            if scorer is not None:
                scorer.close()

    def _barge_in(self) -> None:
        if self._speaking is not None:
            self._speaking.cancel()
            dropped = self._leg.pacer.flush()
            log.debug("barge-in: dropped %d ms of queued agent audio", dropped)

    async def _recognise(self, asr: ASR, audio: trio.MemoryReceiveChannel[bytes]) -> None:
        """One utterance through one ASR stream; the final transcript goes to ``listen()``.

        The stream is closed however this ends, so the engine goes back to its pool even
        when the call ends mid-utterance.
        """
        stream = await asr.open_stream(self.sample_rate)
        try:
            async for frame in audio:
                await stream.send_audio(frame)
            result = await stream.finish()
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()
        text = result.text.strip()
        log.info("caller said: %r", text)
        if text:
            self.history.append({"role": "user", "content": text})
            await self.transcript.write("caller", text=text)
        try:
            self._transcript_send.send_nowait(text)
        except trio.WouldBlock:
            log.warning("transcript queue full; dropped %r", text)

    async def _record_agent(self, text: str, heard: str, *, interrupted: bool) -> None:
        if heard:
            self.history.append({"role": "assistant", "content": heard})
        if interrupted:
            await self.transcript.write("agent", text=heard, interrupted=True, intended=text)
        else:
            await self.transcript.write("agent", text=text)


async def _once(text: str) -> AsyncIterator[str]:
    yield text
