"""The root of the nursery tree: listeners, the calls nursery, and graceful shutdown.

    trivox serve
    └── server nursery
        ├── SIP over UDP, TCP and TLS (one sans-IO user agent; a task per connection)
        ├── AudioSocket listener
        ├── signal watcher (SIGINT, SIGTERM -> graceful shutdown)
        └── calls nursery
            └── one nursery per call (sipgw.calls)

Shutdown is a cancellation with a grace period: every call is hung up (BYE or a hangup
frame) and its transcript closed, then the root is cancelled.
"""

from __future__ import annotations

import dataclasses
import gc
import logging
import signal
import ssl
from functools import partial
from typing import Any

import trio

from dialog.call import CallServices
from dialog.plugins import PluginError, load_handler
from dialog.realtime import RealtimeSettings
from dialog.tools import ToolError, builtin_tools, by_name, load_tools
from media.ambience import comfort_noise, load_ambience
from media.pacer import TICK_S, MediaClock
from media.vad import VadBatcher
from media.vad import session as vad_session
from providers.base import ProviderError
from providers.registry import KINDS, build

from .audiosocket.server import serve_audiosocket
from .calls import Calls
from .config import Config, ConfigError, HostPort
from .sip_server import SipServer

#: The rates a call runs at (those of the VAD): 8 kHz narrowband, 16 kHz wideband.
CALL_RATES = (8000, 16000)

log = logging.getLogger("trivox.server")


def tls_context(config: Config) -> ssl.SSLContext | None:
    """The server context for SIP over TLS, or None when ``sip.tls_port`` is 0.

    A certificate or key that does not load is a ConfigError naming the key.
    """
    sip = config.sip
    if not sip.tls_port:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(sip.tls_certificate, sip.tls_key or None)
    except (OSError, ssl.SSLError) as exc:
        key = "sip.tls_key" if sip.tls_key and "key" in str(exc).lower() else "sip.tls_certificate"
        raise ConfigError(config.source, key, f"cannot load the TLS certificate and key: {exc}") from None
    return context


#: Keys of a provider's table that the dialog uses, not the provider.
DIALOG_KEYS = {"llm": ("instructions",), "sts": ("instructions", "instructions_url", "instructions_file")}


def _provider(config: Config, kind: str) -> Any:
    """The provider of ``[kind]``, or None when its type is empty (no LLM, no STS).

    It is given the keys the file set (those that differ from the schema's default),
    so a provider can tell the user about a key it does not take.
    """
    table = getattr(config, kind)
    if not table.type:
        return None
    defaults = type(table)()
    skip = {"type", "options", *DIALOG_KEYS.get(kind, ())}
    options = {f.name: getattr(table, f.name) for f in dataclasses.fields(table)
               if f.name not in skip and getattr(table, f.name) != getattr(defaults, f.name)}
    options.update(table.options)
    shared = {"openai": dataclasses.asdict(config.openai), "google": dataclasses.asdict(config.google)}
    try:
        return build(kind, table.type, options, shared)
    except ProviderError as exc:
        raise ConfigError(config.source, kind, str(exc)) from None


def prepare(config: Config) -> Calls:
    """Load the dialog handler and the providers; a problem is a ConfigError naming the key."""
    try:
        handler = load_handler(config.dialog.handler)
    except PluginError as exc:
        raise ConfigError(config.source, "dialog.handler", str(exc)) from None
    providers = {kind: _provider(config, kind) for kind in KINDS}
    needs = {"agent": "llm", "realtime": "sts"}.get(config.dialog.handler)
    if needs is not None and providers[needs] is None:
        raise ConfigError(config.source, f"{needs}.type",
                          f"the {config.dialog.handler} dialog needs a provider: set [{needs}] type")
    try:
        tools = by_name(builtin_tools(config.dialog.transfer_to) + load_tools(config.dialog.tools))
    except ToolError as exc:
        raise ConfigError(config.source, "dialog.tools", str(exc)) from None
    sts = config.sts
    try:
        vad_session()  # load the model now: a missing one stops start-up, not the first call
    except RuntimeError as exc:
        raise ConfigError(config.source, "vad", str(exc)) from None
    audio = config.audio
    try:
        ambience = {rate: load_ambience(audio.ambience, rate, audio.ambience_level_db)
                    for rate in CALL_RATES} if audio.ambience else {}
    except ValueError as exc:
        raise ConfigError(config.source, "audio.ambience", str(exc)) from None
    comfort = {rate: comfort_noise(rate, audio.comfort_noise_dbfs)
               for rate in CALL_RATES} if audio.comfort_noise_dbfs else {}
    services = CallServices(
        asr=providers["asr"],
        tts=providers["tts"],
        llm=providers["llm"],
        instructions=config.llm.instructions,
        tools=tools,
        sts=providers["sts"],
        realtime=RealtimeSettings(sts.instructions, sts.instructions_url, sts.instructions_file,
                                  sts.turn_detection),
        vad=config.vad,
        transcripts_dir=config.transcripts.dir or None,
        greeting=config.dialog.greeting,
        listen_timeout=config.dialog.listen_timeout,
        vad_batcher=VadBatcher(),
        ambience=ambience,
        comfort_noise=comfort,
        recordings_dir=audio.recordings or None,
    )
    return Calls(services, handler, MediaClock())


async def serve(config: Config, calls: Calls) -> None:
    """Run the server until cancelled or signalled; ``calls`` comes from ``prepare``."""
    async with trio.open_nursery() as root:
        if calls.clock is not None:
            await root.start(calls.clock.run)
        if calls.services.vad_batcher is not None:
            # Half a tick after the calls' sends: a batch of hundreds of windows takes
            # milliseconds, which must not fall on the instant the packets go out.
            await trio.sleep(TICK_S / 2)
            await root.start(calls.services.vad_batcher.run)
        calls_nursery = await root.start(_calls_nursery)
        sip = SipServer(config, calls, calls_nursery, tls=tls_context(config))
        await root.start(sip.run)
        if config.audiosocket.enabled:
            address = await root.start(partial(serve_audiosocket, g711_law=config.audiosocket.g711_law),
                                       config.audiosocket.listen, calls, calls_nursery)
            log.info("AudioSocket listening on tcp %s", HostPort(*address))
        log.info("dialog %r, ASR %s, TTS %s (config: %s)", config.dialog.handler, config.asr.type,
                 config.tts.type, config.source)
        root.start_soon(_shutdown_on_signal, calls, sip, root.cancel_scope)
        quiet_garbage_collector()


#: The cyclic collector's thresholds once the server is up (CPython's own: 700, 10, 10).
GC_THRESHOLDS = (5000, 50, 1000)


def quiet_garbage_collector() -> None:
    """Keep the garbage collector's pauses off the media clock.

    A collection stops the event loop for as long as it walks the objects it covers: at
    200 calls, bench/media.py measured full collections of 60-110 ms every few seconds
    and young ones of up to 15 ms, each a burst of late packets on every call (p99 send
    deviation 60-100 ms at 60% CPU). Everything loaded at start-up (models, modules, the
    SIP stack) lives as long as the process, so ``gc.freeze`` takes it out of the
    collector's sight; and since a call's objects are freed by reference counting, not
    by the collector, rarer collections lose nothing but time.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def _calls_nursery(*, task_status: trio.TaskStatus[trio.Nursery] = trio.TASK_STATUS_IGNORED) -> None:
    async with trio.open_nursery() as nursery:
        task_status.started(nursery)
        await trio.sleep_forever()


async def _shutdown_on_signal(calls: Calls, sip: SipServer, root: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for signum in signals:
            log.info("%s: hanging up %d call(s) and stopping", signal.Signals(signum).name, len(calls.live))
            await calls.shutdown()
            await sip.unregister()
            root.cancel()
            return

