"""Tools from plain async functions: the schema the model sees, and calls it gets wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pytest

from dialog.plugins import load_handler
from dialog.tools import ToolError, builtin_tools, by_name, load_tools, tool_from_function


async def book_table(call, people: int, time: str, area: Literal["inside", "terrace"] = "inside",
                     notes: list[str] | None = None) -> dict:
    """Book a table for the caller.

    The second paragraph is for humans, not for the model.
    """
    return {"caller": call, "people": people, "time": time, "area": area}


async def opening_hours(day: str) -> str:
    """The shop's opening hours on a day of the week."""
    return "closed" if day == "sunday" else "9 to 5"


def test_the_schema_comes_from_the_signature_and_docstring():
    tool = tool_from_function(opening_hours)
    assert tool.spec.name == "opening_hours"
    assert tool.spec.description == "The shop's opening hours on a day of the week."
    assert tool.spec.parameters == {"type": "object", "properties": {"day": {"type": "string"}},
                                    "required": ["day"]}
    assert not tool.takes_call


def test_a_parameter_type_json_cannot_carry_is_refused_at_load():
    async def bad(when: complex) -> str:
        """Nope."""
        return ""

    with pytest.raises(ToolError, match="parameter 'when'"):
        tool_from_function(bad)


def test_optional_list_is_refused_but_literal_and_defaults_are_schema():
    with pytest.raises(ToolError, match="notes"):
        tool_from_function(book_table)

    async def book(call, people: int, area: Literal["inside", "terrace"] = "inside") -> dict:
        """Book."""
        return {"caller": call, "people": people, "area": area}

    tool = tool_from_function(book)
    assert tool.takes_call
    assert tool.spec.parameters["properties"] == {"people": {"type": "integer"},
                                                  "area": {"type": "string", "enum": ["inside", "terrace"]}}
    assert tool.spec.parameters["required"] == ["people"]


async def test_run_passes_the_call_and_the_models_arguments():
    async def book(call, people: int) -> dict:
        """Book."""
        return {"caller": call, "people": people}

    tool = tool_from_function(book)
    assert json.loads(await tool.run("the-call", '{"people": 2}')) == {"caller": "the-call", "people": 2}
    assert await tool_from_function(opening_hours).run("the-call", '{"day": "sunday"}') == "closed"


@pytest.mark.parametrize(("arguments", "message"), [
    ("{not json", "not JSON"),
    ("[1]", "must be a JSON object"),
    ('{"day": "monday", "hour": 3}', "unknown arguments ['hour']"),
    ("{}", "missing ['day']"),
])
async def test_a_wrong_call_is_an_error_the_model_can_read(arguments, message):
    with pytest.raises(ToolError, match=message.replace("[", r"\[").replace("]", r"\]")):
        await tool_from_function(opening_hours).run(None, arguments)


def test_load_tools_by_module_path_and_clear_errors():
    (tool,) = load_tools(["tests.test_tools:opening_hours"])
    assert tool.spec.name == "opening_hours"
    for name, message in [("tests.test_tools", "expected"), ("no_such_mod_x:f", "cannot import"),
                          ("tests.test_tools:nothing", "has no 'nothing'")]:
        with pytest.raises(ToolError, match=message):
            load_tools([name])


def test_builtins_offer_transfer_only_with_a_target_and_names_are_unique():
    assert [t.spec.name for t in builtin_tools("")] == ["hangup"]
    assert [t.spec.name for t in builtin_tools("sip:200@pbx")] == ["hangup", "transfer"]
    hangup = builtin_tools("")[0]
    with pytest.raises(ToolError, match="two tools are named 'hangup'"):
        by_name([hangup, hangup])


def test_the_example_plugins_tools_load_with_their_schemas(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "examples"))
    bread, reserve = load_tools(["bakery:todays_bread", "bakery:reserve"])
    assert bread.spec.parameters["properties"]["day"]["enum"][0] == "monday"
    assert reserve.takes_call and reserve.spec.parameters["required"] == ["bread", "loaves"]
    assert load_handler("bakery:handle").__name__ == "handle"
