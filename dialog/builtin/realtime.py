"""The built-in realtime dialog: the call handed to a speech-to-speech model ([sts]).

The model greets the caller and carries the conversation; trivox carries the audio,
the barge-ins, the tools and the transcript (see dialog.realtime).
"""

from __future__ import annotations

from dialog.call import Call


async def handle(call: Call) -> None:
    await call.answer()
    await call.converse()
