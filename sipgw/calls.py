"""The calls nursery: one nursery per call, whatever transport brought it.

Both transports (SIP/RTP and AudioSocket) build a leg and hand it here with the media
tasks that feed it. ``Calls.run`` opens the call's nursery, starts those tasks and the
pacer, runs the dialog, and when the dialog or the transport ends the call, cancels
exactly that nursery. A failure inside one call is logged with its id and ends only it.
"""

from __future__ import annotations

import logging
import time
from functools import partial
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from dialog.call import CallServices
from dialog.leg import Leg
from dialog.plugins import Handler
from dialog.runner import run_dialog
from media.ambience import Ambience
from media.pacer import MediaClock, Sink
from media.recorder import CallRecorder, open_recording

from .log import CALL_ID

log = logging.getLogger("trivox.calls")

#: Time the calls get at shutdown to send their BYE / hangup frame.
SHUTDOWN_GRACE = 2.0


class ServerLeg(Leg, Protocol):
    """A leg as the server drives it: it can be ended from the transport side."""

    cancel_scope: trio.CancelScope | None

    async def pacer_sink(self, frame: bytes | None) -> None:
        """Where the pacer delivers each 20 ms tick's frame."""

    def receive_tick(self) -> None:
        """Each tick's second half, once every call has sent (RTP reads and plays out)."""


class Calls:
    """All live calls; lives in the server nursery."""

    def __init__(self, services: CallServices, handler: Handler, clock: MediaClock | None = None) -> None:
        """``clock``: the 20 ms grid all calls' pacers share; the server runs it."""
        self.services = services
        self.handler = handler
        self.clock = clock
        self.live: dict[str, ServerLeg] = {}

    async def run(self, leg: ServerLeg, media_tasks: list[Callable[[], Awaitable[None]]]) -> None:
        """One call from start to end. Never raises: a broken call must not harm others."""
        CALL_ID.set(leg.call_id)
        started = time.monotonic()
        log.info("call started from %s", leg.caller or "unknown caller")
        self.live[leg.call_id] = leg
        recorder = self._recorder(leg)
        try:
            async with trio.open_nursery() as nursery:
                leg.cancel_scope = nursery.cancel_scope
                for task in media_tasks:
                    nursery.start_soon(task)
                await nursery.start(partial(leg.pacer.run, after=leg.receive_tick),
                                    self._outbound(leg, recorder), self.clock)
                await run_dialog(leg, self.services, self.handler, nursery, recorder)
                nursery.cancel_scope.cancel()
        except Exception:
            log.exception("call failed")
            leg.end_reason = leg.end_reason or "internal error"
        finally:
            if recorder is not None:
                recorder.close()
            self.live.pop(leg.call_id, None)
            log.info("call ended after %.1f s: %s", time.monotonic() - started,
                     leg.end_reason or "dialog finished")

    def _recorder(self, leg: ServerLeg) -> CallRecorder | None:
        folder = self.services.recordings_dir
        if not folder:
            return None
        try:
            return open_recording(folder, leg.call_id, leg.sample_rate)
        except OSError as exc:
            log.error("cannot record the call: %s", exc)
            return None

    def _outbound(self, leg: ServerLeg, recorder: CallRecorder | None) -> Sink:
        """The pacer's sink for the call: ambience and comfort noise mixed in, the result
        recorded, then sent."""
        mixers = []
        if (ambience := self.services.ambience.get(leg.sample_rate)) is not None:
            mixers.append(Ambience(ambience))
        if (noise := self.services.comfort_noise.get(leg.sample_rate)) is not None:
            mixers.append(Ambience(noise, only_in_silence=True))
        if not mixers and recorder is None:
            return leg.pacer_sink

        async def outbound(frame: bytes | None) -> None:
            for mixer in mixers:
                frame = mixer.mix(frame)
            if recorder is not None:
                recorder.agent(frame)
            await leg.pacer_sink(frame)

        return outbound

    async def shutdown(self) -> None:
        """Hang up every call (BYE, hangup frame); cancel those that do not finish in time."""
        legs = list(self.live.values())
        with trio.move_on_after(SHUTDOWN_GRACE):
            for leg in legs:
                leg.end_reason = leg.end_reason or "server shutting down"
                with trio.move_on_after(SHUTDOWN_GRACE / 2):
                    await leg.hangup()
        for leg in legs:
            if leg.cancel_scope is not None:
                leg.cancel_scope.cancel()

