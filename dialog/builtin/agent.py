"""The built-in agent dialog: ASR -> LLM -> TTS, streamed, with tools.

It greets the caller, then answers each thing the caller says with the configured
language model ([llm]), spoken as it streams. The model may hang up or transfer the
call with the built-in tools, and call the user's tools ([dialog] tools).
"""

from __future__ import annotations

from dialog.call import Call


async def handle(call: Call) -> None:
    await call.answer()
    if call.services.greeting:
        await call.say(call.services.greeting)
    while True:
        if await call.listen() is not None:
            await call.agent.respond()
