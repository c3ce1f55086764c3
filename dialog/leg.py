"""What the transport layer hands the dialog for one call.

sipgw implements a ``Leg`` for a SIP/RTP call and one for an AudioSocket connection; the
dialog runtime sees only this protocol, so a dialog never knows which one it is on.
"""

from __future__ import annotations

from typing import Protocol

import trio

from media.pacer import Pacer


#: DTMF digits a dialog may leave unread (type-ahead) before more are dropped.
DIGIT_QUEUE = 64


class Leg(Protocol):
    #: The id that names this call in logs and transcripts (SIP Call-ID or AudioSocket UUID).
    call_id: str
    #: Who is calling, as the transport knows it (a SIP From URI, or empty).
    caller: str
    #: Sample rate of ``inbound`` frames and of the audio the pacer takes.
    sample_rate: int
    #: Caller audio, one 20 ms s16le frame per item, in playout order.
    inbound: trio.MemoryReceiveChannel[bytes]
    #: Agent audio out: the call's 20 ms clock.
    pacer: Pacer
    #: DTMF digits from the caller ("0"-"9", "*", "#", "A"-"D"), whatever carried them
    #: (RFC 4733 events in the RTP stream, SIP INFO, an AudioSocket DTMF frame).
    digits: trio.MemoryReceiveChannel[str]
    #: Why the call ended, once it has (for the transcript); empty while it runs.
    end_reason: str

    async def answer(self) -> None:
        """Connect the call (SIP 200 OK); a no-op where the peer already answered."""

    async def hangup(self) -> None:
        """End the call from our side (SIP BYE, AudioSocket hangup frame)."""

    async def transfer(self, target: str) -> bool:
        """Hand the caller to ``target`` (a SIP URI); True once the transfer succeeded."""

    async def send_digits(self, digits: str) -> bool:
        """Press keys towards the caller, returning once they are sent; False where the
        transport cannot."""
