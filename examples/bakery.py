"""A dialog plugin to copy: a bakery's phone agent with one tool of its own.

    [dialog]
    handler = "bakery:handle"            # with examples/ on PYTHONPATH
    tools = ["bakery:todays_bread", "bakery:reserve"]
    transfer_to = "sip:counter@pbx"
    [llm]
    type = "openai"

The model sees each tool's docstring and parameters; it may also hang up (the built-in
hangup tool) and transfer the caller (built in once ``transfer_to`` is set).
"""

from __future__ import annotations

from typing import Literal

BREAD = {"monday": ["rye", "sourdough"], "saturday": ["brioche", "rye", "spelt"]}


async def todays_bread(day: Literal["monday", "tuesday", "wednesday", "thursday", "friday", "saturday"]) -> str:
    """The breads the bakery bakes on a day of the week."""
    return ", ".join(BREAD.get(day, ["rye"]))


async def reserve(call, bread: str, loaves: int) -> str:
    """Put loaves of a bread aside for the caller, to collect today."""
    await call.transcript.write("reservation", bread=bread, loaves=loaves, caller=call.caller)
    return f"{loaves} {bread} reserved for {call.caller or 'the caller'}"


async def handle(call) -> None:
    await call.answer()
    await call.say("Bakery Braun, good morning. What can I do for you?")
    while True:
        if await call.listen(timeout=15) is None:
            await call.say("Are you still there?")
            continue
        await call.agent.respond()
