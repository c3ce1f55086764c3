"""Functions the agent's model may call: the built-in hangup and transfer, and the user's.

A user tool is a plain async function in the user's module, named in the config as
"package.module:function". Its docstring's first paragraph tells the model what it is
for, and its annotated parameters become the JSON schema of the arguments, so the
function is the only place a tool is described. A first parameter named ``call`` gets
the Call (to read the caller's number, or to press keys); the model never sees it.

    async def opening_hours(day: str) -> str:
        \"\"\"The shop's opening hours on a day of the week.\"\"\"
        return "9 to 5" if day != "sunday" else "closed"
"""

from __future__ import annotations

import inspect
import json
import logging
import typing
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from providers.base import ProviderError, ToolCall, ToolSpec

from .plugins import PluginError, import_by_name

if TYPE_CHECKING:
    from .call import Call

log = logging.getLogger("trivox.dialog")

#: JSON schema types of the annotations a tool's parameters may have.
_JSON_TYPES: dict[Any, str] = {str: "string", int: "integer", float: "number", bool: "boolean"}


class ToolError(Exception):
    """A tool cannot be loaded (at start-up) or was called wrongly (by the model)."""


@dataclass(frozen=True)
class Tool:
    spec: ToolSpec
    function: Callable[..., Awaitable[Any]]
    #: The function's first parameter is ``call``.
    takes_call: bool = False

    async def run(self, call: Call, arguments: str) -> str:
        """Run the tool on the model's ``arguments`` (a JSON text); the result as text.

        A wrong call (bad JSON, unknown or missing arguments) raises ToolError, whose
        message goes back to the model so it can correct itself.
        """
        try:
            values = json.loads(arguments or "{}")
        except json.JSONDecodeError as exc:
            raise ToolError(f"arguments are not JSON: {exc}") from None
        if not isinstance(values, dict):
            raise ToolError("arguments must be a JSON object")
        properties = self.spec.parameters.get("properties", {})
        unknown = set(values) - set(properties)
        missing = set(self.spec.parameters.get("required", ())) - set(values)
        if unknown or missing:
            raise ToolError(f"unknown arguments {sorted(unknown)}, missing {sorted(missing)}")
        result = await (self.function(call, **values) if self.takes_call else self.function(**values))
        return result if isinstance(result, str) else json.dumps(result)


def tool_from_function(function: Callable[..., Awaitable[Any]], name: str | None = None) -> Tool:
    """A Tool described by ``function``'s name, docstring and annotations."""
    if not inspect.iscoroutinefunction(function):
        raise ToolError(f"tool {function.__qualname__} must be an async function")
    parameters = list(inspect.signature(function).parameters.values())
    takes_call = bool(parameters) and parameters[0].name == "call"
    properties: dict[str, Any] = {}
    required = []
    for parameter in parameters[1 if takes_call else 0:]:
        hint = _annotation(function, parameter.name)
        schema = _schema(hint)
        if schema is None:
            raise ToolError(f"tool {function.__qualname__}: parameter {parameter.name!r} has type {hint!r}; "
                            "use str, int, float, bool, a Literal of strings, or a list of those")
        properties[parameter.name] = schema
        if parameter.default is inspect.Parameter.empty:
            required.append(parameter.name)
    description = inspect.cleandoc(function.__doc__ or "").split("\n\n", 1)[0].replace("\n", " ")
    spec = ToolSpec(name or function.__name__, description,
                    {"type": "object", "properties": properties, "required": required})
    return Tool(spec, function, takes_call)


def _annotation(function: Callable[..., Any], name: str) -> Any:
    """A parameter's annotation, evaluated if it is a string (``from __future__ import
    annotations``). Only the model's parameters are evaluated: ``call: Call`` may name a
    class the tool's module imports for type checking alone."""
    annotation = inspect.get_annotations(function).get(name, str)
    if isinstance(annotation, str):
        annotation = eval(annotation, function.__globals__)  # the tool module's own source text
    return annotation


def _schema(hint: Any) -> dict[str, Any] | None:
    if hint in _JSON_TYPES:
        return {"type": _JSON_TYPES[hint]}
    origin = typing.get_origin(hint)
    if origin is typing.Literal and all(isinstance(value, str) for value in typing.get_args(hint)):
        return {"type": "string", "enum": list(typing.get_args(hint))}
    if origin is list:
        (item,) = typing.get_args(hint) or (str,)
        inner = _schema(item)
        return None if inner is None else {"type": "array", "items": inner}
    return None


def load_tools(names: list[str]) -> list[Tool]:
    """The user's tools named "package.module:function"; a bad name is a ToolError."""
    tools = []
    for name in names:
        try:
            function = import_by_name(name, "tool")
        except PluginError as exc:
            raise ToolError(str(exc)) from None
        tools.append(tool_from_function(function))  # type: ignore[arg-type]
    return tools


def builtin_tools(transfer_to: str) -> list[Tool]:
    """hangup always; transfer when the config names where to."""

    async def hangup(call: Call) -> str:
        """End the call, once the caller has said goodbye or asked to hang up."""
        call.hang_up_after_turn()
        return "The call will end after your reply."

    tools = [tool_from_function(hangup)]
    if transfer_to:
        async def transfer(call: Call) -> str:
            """Transfer the caller to a person, when they ask for one or you cannot help."""
            call.transfer_after_turn(transfer_to)
            return "The caller will be transferred after your reply."

        tools.append(tool_from_function(transfer))
    return tools


def by_name(tools: list[Tool]) -> Mapping[str, Tool]:
    """Tools by name; a user tool cannot take a built-in's name."""
    table: dict[str, Tool] = {}
    for tool in tools:
        if tool.spec.name in table:
            raise ToolError(f"two tools are named {tool.spec.name!r}")
        table[tool.spec.name] = tool
    return table


async def run_tool(call: Call, tools: Mapping[str, Tool], tool_call: ToolCall) -> str:
    """Run the tool the model asked for; its output, or an error the model can read.

    A tool that fails does not fail the call: the model is told, and can apologise.
    Both the call and its result go to the transcript.
    """
    await call.transcript.write("tool", name=tool_call.name, arguments=tool_call.arguments)
    tool = tools.get(tool_call.name)
    if tool is None:
        output = f"error: there is no tool named {tool_call.name!r}"
    else:
        try:
            output = await tool.run(call, tool_call.arguments)
        except ToolError as exc:
            output = f"error: {exc}"
        except (ProviderError, OSError, ValueError, LookupError) as exc:
            log.warning("tool %s failed: %s", tool_call.name, exc)
            output = f"error: the tool failed ({exc})"
    await call.transcript.write("tool-result", name=tool_call.name, output=output)
    return output
