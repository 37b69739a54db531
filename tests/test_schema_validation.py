"""Tool-call arguments are checked by a real JSON-Schema validator (Draft 2020-12) before any tool runs.

One case per keyword through the real Toolbox: the call is refused with one `format_error` observation naming the
argument path and the rule, nothing is raised, and the tool's side effect never happens. The same table's valid
arguments do run, so each case can fail both ways.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

import pydantic
import pytest

from orchestra.tools.spec import Tool, ToolSpec, tool
from orchestra.tools.toolbox import Toolbox
from orchestra.types import ToolCall

SCHEMA: dict[str, Any] = {
    "type": "object",
    "$defs": {"point": {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}},
    "properties": {
        "k": {"type": "integer", "maximum": 20},
        "id": {"anyOf": [{"type": "integer"}, {"type": "string", "pattern": "^[a-z]+$"}]},
        "code": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "at": {"$ref": "#/$defs/point"},
        "mode": {"enum": ["fast", "slow"]},
        "name": {"type": "string", "minLength": 2},
        "filter": {"type": "object", "properties": {"year": {"type": "integer", "minimum": 1900}},
                   "additionalProperties": False},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 4}},
    },
    "required": ["k"],
    "additionalProperties": False,
}

CASES = [
    # keyword, bad arguments, expected path, rule text in the message, good arguments
    ("maximum", {"k": 25}, "arguments.k", "25 is greater than the maximum of 20", {"k": 20}),
    ("anyOf", {"k": 1, "id": 1.5}, "arguments.id", "is not valid under any of the given schemas", {"k": 1, "id": "ab"}),
    ("pattern", {"k": 1, "code": "usd"}, "arguments.code", "does not match '^[A-Z]{3}$'", {"k": 1, "code": "USD"}),
    ("$ref", {"k": 1, "at": {"x": "far"}}, "arguments.at.x", "'far' is not of type 'number'", {"k": 1, "at": {"x": 2}}),
    ("enum", {"k": 1, "mode": "medium"}, "arguments.mode", "'medium' is not one of ['fast', 'slow']",
     {"k": 1, "mode": "slow"}),
    ("minLength", {"k": 1, "name": "a"}, "arguments.name", "'a' is too short", {"k": 1, "name": "ab"}),
    ("additionalProperties", {"k": 1, "limit": 3}, "arguments", "('limit' was unexpected)", {"k": 1}),
    ("required", {}, "arguments", "'k' is a required property", {"k": 0}),
    ("nested object", {"k": 1, "filter": {"year": 1800}}, "arguments.filter.year", "less than the minimum of 1900",
     {"k": 1, "filter": {"year": 2000}}),
    ("nested additionalProperties", {"k": 1, "filter": {"month": 3}}, "arguments.filter",
     "('month' was unexpected)", {"k": 1, "filter": {}}),
    ("array items", {"k": 1, "tags": ["ok", "toolong"]}, "arguments.tags[1]", "'toolong' is too long",
     {"k": 1, "tags": ["ok", "fine"]}),
    ("type", {"k": "5"}, "arguments.k", "'5' is not of type 'integer'", {"k": 5}),
]


def _schema_tool(ran: list[dict[str, Any]]) -> Tool:
    def record(**arguments: Any) -> str:
        ran.append(arguments)  # the side effect a refused call must never reach
        return "done"

    return Tool.from_schema(ToolSpec("lookup", "Look something up.", SCHEMA), record)


def _call(box: Toolbox, arguments: dict[str, Any], name: str = "lookup"):
    return asyncio.run(box.call(ToolCall(id="c1", name=name, arguments=arguments)))


@pytest.mark.parametrize(("keyword", "bad", "path", "rule", "good"), CASES, ids=[c[0] for c in CASES])
def test_violation_is_one_error_observation_and_nothing_runs(keyword, bad, path, rule, good) -> None:
    ran: list[dict[str, Any]] = []
    box = Toolbox.of([_schema_tool(ran)])
    obs = _call(box, bad)
    assert obs.status == "format_error", (keyword, obs.content)
    assert f"{path}: " in obs.content and rule in obs.content, obs.content
    assert ran == []
    ok = _call(box, good)
    assert (ok.status, ok.content) == ("ok", "done"), ok.content
    assert ran == [good]


def test_typed_tool_is_held_to_its_schema_including_constraints() -> None:
    ran: list[int] = []

    def search(query: Annotated[str, pydantic.Field(pattern=r"^\S")], k: Annotated[int, pydantic.Field(le=20)] = 5
               ) -> str:
        """Search."""
        ran.append(k)
        return "hits"

    box = Toolbox.of([tool(search)])
    obs = _call(box, {"query": "cats", "k": 25}, name="search")
    assert obs.status == "format_error"
    assert "arguments.k: 25 is greater than the maximum of 20" in obs.content
    assert "arguments.query: ' cats' does not match" in _call(box, {"query": " cats"}, name="search").content
    assert _call(box, {"query": "cats"}, name="search").status == "ok"
    assert ran == [5]


def test_several_violations_are_listed_in_one_observation() -> None:
    box = Toolbox.of([_schema_tool([])])
    obs = _call(box, {"k": 99, "mode": "x", "zzz": 1})
    assert obs.content.count("arguments") >= 3
    assert "arguments.k: 99" in obs.content and "arguments.mode:" in obs.content


def test_huge_violating_value_is_not_echoed_whole() -> None:
    box = Toolbox.of([_schema_tool([])])
    obs = _call(box, {"k": 1, "code": "X" * 1_000_000})
    assert obs.status == "format_error" and len(obs.content) < 1_000


def test_invalid_tool_schema_is_a_tool_error_not_a_crash() -> None:
    ran: list[dict[str, Any]] = []
    broken = Tool.from_schema(ToolSpec("broken", "", {"type": "object", "properties": {"a": {"type": "integr"}}}),
                              lambda **kw: ran.append(kw))
    obs = _call(Toolbox.of([broken]), {"a": 1}, name="broken")
    assert obs.status == "tool_error" and "invalid parameters schema" in obs.content and "parameters" in obs.content
    assert ran == []


def test_validator_is_compiled_once_per_spec() -> None:
    spec = ToolSpec("lookup", "", SCHEMA)
    assert spec.argument_problems({"k": 1}) == []
    compiled = spec._validator
    assert compiled is not None
    spec.argument_problems({"k": 99})
    assert spec._validator is compiled
