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
    tools = {tool.spec.name: tool for tool in call.services.tools}
    async with sts.connect(call.sample_rate, instructions, [tool.spec for tool in tools.values()]) as session:
        conversation = _Conversation(call, session, tools, settings)
        await conversation.run()


class _Reply:
    """The agent reply being played: its item, how much audio came, and where it was cut."""

    def __init__(self, item_id: str) -> None:
        self.item_id = item_id
        self.received_ms = 0.0
        self.played_at_cut: int | None = None


class _Conversation:
    def __init__(self, call: Call, session: StsSession, tools: dict[str, Tool], settings: RealtimeSettings) -> None:
        self._call = call
        self._session = session
        self._tools = tools
        self._settings = settings
        self._pacer = call.pacer
        self._reply: _Reply | None = None
        send, self._caller_audio = trio.open_memory_channel[bytes](CALLER_QUEUE)
        self._caller_send = send

    async def run(self) -> None:
        stop_tap = self._call.tap(self._hear)
        stop_vad = self._call.on_speech(self._our_vad) if self._settings.turn_detection == "trivox" else None
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send_caller_audio)
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

    async def _our_vad(self, started: bool) -> None:
        """turn_detection = "trivox": our VAD's speech start is a barge-in, its end the turn's end."""
        if started:
            await self._barge_in()
        else:
            await self._session.respond()

    async def _handle(self, event: object) -> None:
        call = self._call
        if isinstance(event, AgentAudio):
            if self._reply is None or event.item_id != self._reply.item_id:
                self._reply = _Reply(event.item_id)
                self._pacer.start_utterance()
            if self._reply.played_at_cut is None:  # audio of a cut reply still in flight
                self._reply.received_ms += duration_ms(event.pcm, call.sample_rate)
                self._pacer.enqueue(event.pcm)
        elif isinstance(event, CallerSpeechStarted):
            await self._barge_in()
        elif isinstance(event, SpokenText) and event.final and event.text:
            await self._spoken(event)
        elif isinstance(event, ToolCall):
            await self._tool(event)
        elif isinstance(event, ResponseDone):
            self._pacer.end_utterance()
            await self._pacer.wait_idle()
            await call.end_turn(heard=self._reply is None or self._reply.played_at_cut is None)

    async def _barge_in(self) -> None:
        reply = self._reply
        if reply is None or reply.played_at_cut is not None or not self._pacer.queued_ms:
            return  # the agent is not speaking
        played = self._pacer.played_ms
        self._pacer.flush()
        reply.played_at_cut = played
        log.info("barge-in after %d ms of agent speech", played)
        await self._session.truncate(reply.item_id, played)

    async def _spoken(self, event: SpokenText) -> None:
        call = self._call
        if event.role == "user":
            call.history.append({"role": "user", "content": event.text})
            await call.transcript.write("caller", text=event.text)
            return
        reply = self._reply
        if reply is not None and reply.played_at_cut is not None:
            heard = heard_prefix(event.text, reply.played_at_cut, max(reply.received_ms, reply.played_at_cut))
            if heard:
                call.history.append({"role": "assistant", "content": heard})
            await call.transcript.write("agent", text=heard, interrupted=True, intended=event.text)
        else:
            call.history.append({"role": "assistant", "content": event.text})
            await call.transcript.write("agent", text=event.text)

    async def _tool(self, event: ToolCall) -> None:
        output = await run_tool(self._call, self._tools, event)
        await self._session.tool_result(event.id, output)
