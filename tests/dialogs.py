"""Dialog plugins used by the end-to-end tests (loaded by trivox as "tests.dialogs:NAME")."""

from __future__ import annotations

import trio

from dialog.call import Call


async def transfer_to_200(call: Call) -> None:
    """Hand every caller to extension 200 at once; apologise if that fails."""
    await call.answer()
    if not await call.transfer("sip:200@127.0.0.1"):
        await call.say("Sorry, the transfer failed.")
        await call.hangup()


async def read_back_digits(call: Call) -> None:
    """Collect three DTMF digits, say them back, hang up."""
    await call.answer()
    digits = await call.collect_digits(count=3, timeout=10)
    await call.say(f"You pressed {' '.join(digits)}." if digits else "You pressed nothing.")
    await call.hangup()


async def answer_after_a_second(call: Call) -> None:
    """Let the caller wait a second before the answer, so a CANCEL or a retransmitted
    INVITE can arrive while the INVITE is still unanswered; then greet and stay on."""
    await trio.sleep(1)
    await call.answer()
    await call.say("Hello.")
    await trio.sleep_forever()


async def press_digits(call: Call) -> None:
    """Press 1, 9 and # towards the caller, then speak and hang up."""
    await call.answer()
    await call.send_digits("19#")
    await call.say("Seven sixty six, fresh fish.")
    await call.hangup()
