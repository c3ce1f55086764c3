"""Dialog plugins used by the end-to-end tests (loaded by trivox as "tests.dialogs:NAME")."""

from __future__ import annotations

from dialog.call import Call


async def transfer_to_200(call: Call) -> None:
    """Hand every caller to extension 200 at once; apologise if that fails."""
    await call.answer()
    if not await call.transfer("sip:200@127.0.0.1"):
        await call.say("Sorry, the transfer failed.")
        await call.hangup()
