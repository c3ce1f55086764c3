"""The built-in echo dialog: the embedded default, and the smallest complete example.

It greets the caller, then repeats what it heard, until the caller hangs up or says
goodbye. It exercises every stage: VAD endpointing, ASR, TTS, barge-in.
"""

from __future__ import annotations

from dialog.call import Call

GOODBYES = {"goodbye", "bye"}


async def handle(call: Call) -> None:
    await call.answer()
    await call.say(call.services.greeting)
    while True:
        text = await call.listen()
        if text is None:
            await call.say("Are you still there? Say something and I will repeat it.")
            continue
        if GOODBYES & set(text.lower().split()):
            await call.say("Goodbye.")
            await call.hangup()
        else:
            await call.say(f"You said: {text}")
