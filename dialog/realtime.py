"""A call handed to a speech-to-speech model (OpenAI Realtime, an AVR STS connector).

The model hears the caller and speaks back itself; trivox carries the audio both ways,
keeps the agent's speech on the call's 20 ms clock, runs the tools the model calls, and
writes both sides' words to the transcript and the history.

Barge-in: when the caller starts talking over the agent (the service says so, or, with
``turn_detection = "trivox"``, our own VAD does), the pacer's queue is flushed at once
and the service is told how many milliseconds of the reply the caller actually heard
(``truncate``), so the model's memory of the conversation holds only that; the history
and transcript keep the same cut.
"""

from __future__ import annotations

import json
import logging
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from media.audio import duration_ms
from providers.base import (
    STS,
    AgentAudio,
    CallerSpeechStarted,
    ProviderError,
    ResponseDone,
    SpokenText,
    StsSession,
    ToolCall,
)

from .heard import heard_prefix
from .tools import Tool, run_tool

if TYPE_CHECKING:
    from .call import Call

log = logging.getLogger("trivox.dialog")

#: Caller frames waiting for the service (5 s); past that the link is too slow to help.
CALLER_QUEUE = 250
#: How long the agent's audio must have been quiet before a reply counts as played out.
PLAYOUT_QUIET_S = 0.3
#: Seconds a per-call instructions URL may take to answer.
INSTRUCTIONS_TIMEOUT = 5.0


@dataclass(frozen=True)
class RealtimeSettings:
    """What the realtime dialog tells the model, besides what the provider was built with."""

    #: The system prompt; when empty, fetched from ``instructions_url`` (per call, like
    #: AVR's OPENAI_URL_INSTRUCTIONS) or read from ``instructions_file``.
    instructions: str = ""
    instructions_url: str = ""
    instructions_file: str = ""
    #: "trivox": our VAD cuts the turns (barge-in, end of turn); otherwise the service does.
    turn_detection: str = "server_vad"
    #: The agent speaks first (the model greets the caller).
    greet: bool = True

    async def resolve(self, call_id: str) -> str:
        """The instructions for call ``call_id``, in AVR's order of precedence."""
        if self.instructions:
            return self.instructions
        if self.instructions_url:
            return await trio.to_thread.run_sync(_fetch_instructions, self.instructions_url, call_id,
                                                 abandon_on_cancel=True)
        if self.instructions_file:
            try:
                return Path(self.instructions_file).read_text().strip()
            except OSError as exc:
                raise ProviderError(f"cannot read sts.instructions_file: {exc}") from None
        return ""


def _fetch_instructions(url: str, call_id: str) -> str:
    """GET ``url`` with the call's id in X-AVR-UUID; the answer is {"system": "..."}."""
    request = urllib.request.Request(url, headers={"Accept": "application/json", "X-AVR-UUID": call_id})
    try:
        with urllib.request.urlopen(request, timeout=INSTRUCTIONS_TIMEOUT) as response:
            answer = json.load(response)
    except (OSError, ValueError) as exc:
        raise ProviderError(f"cannot fetch the instructions from sts.instructions_url: {exc}") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("system"), str):
        raise ProviderError('sts.instructions_url must answer {"system": "..."}')
    return answer["system"]


async def converse(call: Call, sts: STS, settings: RealtimeSettings) -> None:
    """Run the call on ``sts`` until the call or the session ends."""
    instructions = await settings.resolve(call.id)
    tools = call.services.tools
    specs = [tool.spec for tool in tools.values()]
    async with sts.connect(call.sample_rate, instructions, specs, call_id=call.id) as session:
        conversation = _Conversation(call, session, tools, settings)
        await conversation.run()


class _Reply:
    """One agent reply: its audio item, how much of it came, its words (the service's
    transcript so far), and where the caller cut it."""

    def __init__(self, item_id: str) -> None:
        self.item_id = item_id
        self.received_ms = 0.0
        self.text = ""
        self.played_at_cut: int | None = None
        self.done = False  # the service has sent all of it
        self.awaiting_playout = False  # a task records it once it has played out
        self.recorded = False  # its words are in the history

    @property
    def open(self) -> bool:
        """Still arriving and not cut: new audio and words belong to it."""
        return not self.done and self.played_at_cut is None


class _Conversation:
    """The event loop of one speech-to-speech call.

    The service sends a reply's audio and transcript far faster than the caller hears
    them, so a reply's words go to the history only once they have been heard: when its
    audio has played out, or, cut by a barge-in, as far as it had played.
    """

    def __init__(self, call: Call, session: StsSession, tools: Mapping[str, Tool], settings: RealtimeSettings) -> None:
        self._call = call
        self._session = session
        self._tools = tools
        self._settings = settings
        self._pacer = call.pacer
        self._reply: _Reply | None = None
        self._tool_answered = False  # the current response's tool calls were answered
        self._nursery: trio.Nursery | None = None
        send, self._caller_audio = trio.open_memory_channel[bytes](CALLER_QUEUE)
        self._caller_send = send

    async def run(self) -> None:
        stop_tap = self._call.tap(self._hear)
        stop_vad = self._call.on_speech(self._our_vad) if self._settings.turn_detection == "trivox" else None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._send_caller_audio)
                send_digit = getattr(self._session, "send_digit", None)
                if send_digit is not None:  # a service that hears key presses (AVR's connectors)
                    nursery.start_soon(self._forward_digits, send_digit)
                if self._settings.greet:
                    await self._session.respond()
                async for event in self._session.events():
                    await self._handle(event)
                nursery.cancel_scope.cancel()
        finally:
            stop_tap()
            if stop_vad is not None:
                stop_vad()

    def _hear(self, frame: bytes) -> None:
        try:
            self._caller_send.send_nowait(frame)
        except trio.WouldBlock:
            log.debug("speech-to-speech service is behind; dropped a caller frame")

    async def _send_caller_audio(self) -> None:
        async for frame in self._caller_audio:
            await self._session.send_audio(frame)

    async def _forward_digits(self, send_digit: Callable[[str], Awaitable[None]]) -> None:
        async for digit in self._call.digits:
            await self._call.transcript.write("dtmf", digits=digit)
            await send_digit(digit)

    async def _our_vad(self, started: bool) -> None:
        """turn_detection = "trivox": our VAD's speech start is a barge-in, its end the turn's end."""
        if started:
            await self._barge_in()
        else:
            await self._session.respond()

    def _current(self, item_id: str) -> _Reply:
        """The reply that audio of ``item_id`` (or words, with no id) belong to.

        Audio of a reply the caller cut may still be in flight: with the same item id it
        joins the cut reply (and is dropped). A service without item ids (AVR) sends the
        next reply's audio after a cut, and a reply after a finished one is a new one.
        """
        reply = self._reply
        if reply is not None and item_id and item_id == reply.item_id:
            return reply
        if reply is not None and reply.open and (not item_id or not reply.item_id):
            reply.item_id = reply.item_id or item_id
            return reply
        self._reply = _Reply(item_id)
        self._pacer.start_utterance()
        return self._reply

    async def _handle(self, event: object) -> None:
        call = self._call
        if isinstance(event, AgentAudio):
            reply = self._current(event.item_id)
            if reply.played_at_cut is None:  # else: audio of a cut reply still in flight
                reply.received_ms += duration_ms(event.pcm, call.sample_rate)
                self._pacer.enqueue(event.pcm)
        elif isinstance(event, CallerSpeechStarted):
            await self._barge_in()
        elif isinstance(event, SpokenText) and event.role == "user":
            if event.final and event.text:
                call.history.append({"role": "user", "content": event.text})
                await call.transcript.write("caller", text=event.text)
        elif isinstance(event, SpokenText):
            if self._reply is not None and self._reply.played_at_cut is not None and not self._reply.done:
                return  # the rest of a cut reply's words: the caller never heard them
            reply = self._current("")
            reply.text = event.text
            if event.final:  # services without a "response done" (AVR) end a reply here
                self._await_playout(reply)
        elif isinstance(event, ToolCall):
            await self._tool(event)
        elif isinstance(event, ResponseDone):
            self._pacer.end_utterance()
            reply = self._reply
            if reply is not None:
                reply.done = True
            if self._tool_answered:  # the model goes on with the tools' results
                self._tool_answered = False
            elif reply is not None and reply.played_at_cut is None:
                self._await_playout(reply)

    def _await_playout(self, reply: _Reply) -> None:
        if not reply.awaiting_playout:
            reply.awaiting_playout = True
            assert self._nursery is not None
            self._nursery.start_soon(self._played_out, reply)

    async def _played_out(self, reply: _Reply) -> None:
        """Once ``reply`` has played to its end (events flow on meanwhile: a barge-in may
        still cut it): its words into the history, then what a tool asked for (the
        hangup after a goodbye)."""
        while reply.played_at_cut is None:
            await self._pacer.wait_idle()
            # A service may send a reply's words before its audio (AVR's connectors, which
            # have no "response done" either): played out means quiet for a moment.
            await trio.sleep(PLAYOUT_QUIET_S)
            if not self._pacer.queued_ms:
                break
        heard = reply.played_at_cut is None
        if heard:
            await self._record(reply)
        await self._call.end_turn(heard=heard)

    async def _barge_in(self) -> None:
        reply = self._reply
        if reply is None or reply.recorded or reply.played_at_cut is not None or not self._pacer.queued_ms:
            return  # the agent is not speaking (or this reply was cut already)
        played = self._pacer.played_ms
        self._pacer.flush()
        reply.played_at_cut = played
        log.info("barge-in after %d ms of agent speech", played)
        await self._session.truncate(reply.item_id, played)
        await self._record(reply)

    async def _record(self, reply: _Reply) -> None:
        """The reply's words into the history and transcript, once; cut to what was
        heard when the caller barged in."""
        if reply.recorded:
            return
        reply.recorded = True
        call, text = self._call, reply.text
        if reply.played_at_cut is None:
            if text:
                call.history.append({"role": "assistant", "content": text})
                await call.transcript.write("agent", text=text)
            return
        heard = heard_prefix(text, reply.played_at_cut, max(reply.received_ms, reply.played_at_cut))
        if heard:
            call.history.append({"role": "assistant", "content": heard})
        await call.transcript.write("agent", text=heard, interrupted=True, intended=text)

    async def _tool(self, event: ToolCall) -> None:
        output = await run_tool(self._call, self._tools, event)
        await self._session.tool_result(event.id, output)
        self._tool_answered = True
