"""Finding a dialog handler by name.

A handler is ``async def handle(call)``. The config names it as a built-in ("echo"), as
"package.module:function", or as an entry point in the group ``trivox.dialogs``, so a
dialog can ship as its own distribution.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Awaitable, Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .call import Call

Handler = Callable[["Call"], Awaitable[None]]

ENTRY_POINT_GROUP = "trivox.dialogs"
BUILTINS = {
    "echo": "dialog.builtin.echo:handle",
    "agent": "dialog.builtin.agent:handle",
    "realtime": "dialog.builtin.realtime:handle",
}


class PluginError(Exception):
    """The named handler cannot be loaded; the message says why, in one line."""


def load_handler(name: str) -> Handler:
    target = BUILTINS.get(name, name)
    if ":" not in target:
        found = entry_points(group=ENTRY_POINT_GROUP, name=name)
        if not found:
            builtins = ", ".join(sorted(BUILTINS))
            raise PluginError(f'no dialog named {name!r} (built-ins: {builtins}; '
                              f'or "module:function", or an entry point in {ENTRY_POINT_GROUP})')
        handler = next(iter(found)).load()
    else:
        handler = import_by_name(target, "dialog")
    if not inspect.iscoroutinefunction(handler):
        raise PluginError(f"dialog {name!r} must be an async function taking the call")
    return handler


def import_by_name(target: str, what: str) -> object:
    """The object ``target`` names as "package.module:attribute" (a dialog, a tool);
    a PluginError saying which ``what`` could not be found otherwise."""
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise PluginError(f'{what} {target!r}: expected "package.module:function"')
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginError(f"cannot import {what} module {module_name!r}: {exc}") from None
    found = getattr(module, attr, None)
    if found is None:
        raise PluginError(f"{what} module {module_name!r} has no {attr!r}")
    return found
