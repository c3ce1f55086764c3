"""The agent's turn: the language model answers the conversation, with tools, out loud.

``Agent.respond()`` sends the call's history to the LLM and speaks the reply as it
streams (``Call.say_stream``: sentence by sentence into TTS). When the model calls
tools, they run once its reply has been spoken, their results join the history and the
model is asked again, until it answers with text alone. A barge-in cancels the turn
where it is, the model's request included; the history then holds only what the caller
heard, and tools the interrupted reply asked for are not run (the caller may have
interrupted precisely to stop them).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from typing import TYPE_CHECKING

from providers.base import LLM, LlmDone, Message, ProviderError, TextDelta, ToolCall

from .tools import Tool, run_tool

if TYPE_CHECKING:
    from .call import Call

log = logging.getLogger("trivox.dialog")

#: Rounds of tool calls in one turn before the agent gives up (a model in a loop).
MAX_TOOL_ROUNDS = 5
#: What the caller hears when the model fails mid-turn.
TURN_APOLOGY = "Sorry, I could not answer that just now. Could you say it again?"


class Agent:
    """One call's agent: its model, its instructions and its tools."""

    def __init__(self, call: Call, llm: LLM, instructions: str, tools: Mapping[str, Tool]) -> None:
        self._call = call
        self._llm = llm
        self.instructions = instructions
        self._tools = tools

    def messages(self) -> list[Message]:
        """What the model is shown: the instructions, then the call's history."""
        system = [{"role": "system", "content": self.instructions}] if self.instructions else []
        return [*system, *self._call.history]

    async def respond(self) -> bool:
        """Answer the conversation so far, out loud; False if the caller interrupted.

        A failing model (a timeout, a dropped stream, the service's error) costs one
        turn, not the call: what it had said plays out, the caller hears a short
        apology, and respond() returns False; the dialog listens again.
        """
        try:
            return await self._turn()
        except ProviderError as exc:
            log.warning("the agent's turn failed: %s", exc)
            await self._call.transcript.write("error", text=str(exc))
            await self._call.say(TURN_APOLOGY)
            return False

    async def _turn(self) -> bool:
        for _ in range(MAX_TOOL_ROUNDS):
            calls: list[ToolCall] = []
            heard = await self._call.say_stream(self._reply(calls))
            if not heard or not calls:
                await self._call.end_turn(heard=heard)
                return heard
            await self._run_tools(calls)
        log.warning("the model asked for tools %d times in one turn; ending the turn", MAX_TOOL_ROUNDS)
        await self._call.end_turn(heard=True)
        return True

    async def _reply(self, calls: list[ToolCall]) -> AsyncIterator[str]:
        """The model's text as it streams; its tool calls are collected into ``calls``."""
        tools = [tool.spec for tool in self._tools.values()]
        async with aclosing(self._llm.chat(self.messages(), tools)) as events:
            async for event in events:
                if isinstance(event, TextDelta):
                    yield event.text
                elif isinstance(event, ToolCall):
                    calls.append(event)
                elif isinstance(event, LlmDone) and event.finish_reason == "length":
                    log.info("the model's reply was cut at its token limit")

    async def _run_tools(self, calls: list[ToolCall]) -> None:
        self._call.history.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in calls]})
        for tool_call in calls:
            output = await run_tool(self._call, self._tools, tool_call)
            self._call.history.append({"role": "tool", "tool_call_id": tool_call.id, "content": output})
