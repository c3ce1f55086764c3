"""Running one dialog inside one call's nursery.

The transport (sipgw) opens the call's nursery and starts the media tasks in it; it
then awaits ``run_dialog``, which starts the call's ears beside the handler. When the
handler returns or fails, the call is over: the transport cancels the nursery.
"""

from __future__ import annotations

import logging

import trio

from media.recorder import CallRecorder

from .call import Call, CallServices
from .leg import Leg
from .plugins import Handler

log = logging.getLogger("trivox.dialog")

APOLOGY = "Sorry, something went wrong. Goodbye."
#: Time the apology may take before the call is ended anyway.
APOLOGY_TIMEOUT = 8.0


async def run_dialog(leg: Leg, services: CallServices, handler: Handler, nursery: trio.Nursery,
                     recorder: CallRecorder | None = None) -> None:
    """Run ``handler`` for the call on ``leg``; returns when the dialog is done."""
    call = Call(leg, services, nursery, recorder)
    await call.transcript.write("start", caller=leg.caller)
    try:
        nursery.start_soon(call.run_ears)
        try:
            await handler(call)
        except Exception:
            log.exception("dialog failed")
            await call.transcript.write("error", text="dialog failed")
            with trio.move_on_after(APOLOGY_TIMEOUT):
                await call.say(APOLOGY)
        await leg.hangup()
    finally:
        await call.transcript.write("end", reason=leg.end_reason or "dialog finished")
        call.transcript.close()
