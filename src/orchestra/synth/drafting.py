"""What procedural task builders and the verifier share: the per-domain `Context`, the `Draft` record, and the helpers
that pick records and plan the golden reads naming them.

Imports point one way: `drafting` <- `builders` (one builder per task kind) <- `procedural` (the generator and its
verification). A customer names a record by its id, or (one more step: a search) by a unique e-mail, phone or name;
records whose key field disagrees with their key (a few in the real data) are never picked.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orchestra.envs.tau.domains import Domain
from orchestra.envs.tau.domains.derived import ToolDef, ToolsFile, get_path, record_view
from orchestra.synth import templates
from orchestra.synth.derive import FrozenField
from orchestra.synth.schema_infer import DomainSchema, TableInfo
from orchestra.synth.templates import Ref, Scenario
from orchestra.tools.spec import Tool

Action = tuple[str, dict[str, Any]]
WEAK = frozenset({"yes", "no", "none", "null", "true", "false", "n/a", "", "0", "1"})
MAX_VALUE_CHARS = 60


@dataclass
class Context:
    """Everything builders and the verifier need for one domain (read-only once built)."""

    schema: DomainSchema
    tools: ToolsFile
    frozen: tuple[FrozenField, ...]
    domain: Domain
    templates: dict[str, Tool]
    base: dict[str, dict[str, dict[str, Any]]]
    digests: Any
    tool_defs: dict[str, ToolDef] = dataclasses.field(default_factory=dict)

    def tools_of(self, table: str, kind: str) -> list[ToolDef]:
        return [t for t in self.tools.tools if t.table == table and t.kind == kind]


@dataclass(frozen=True, slots=True)
class Draft:
    kind: str
    actions: tuple[Action, ...]
    communicate: tuple[str, ...]
    scenario: Scenario
    purpose: str
    refused: Action | None = None
    refusal_reason: str | None = None
    mixed: bool = False
    """A refusal task that also makes an allowed change (the database must change)."""


# ---- picking records and planning the reads that name them -------------------------------------------------------

def pick(ctx: Context, table: TableInfo, rng: random.Random, k: int = 1,
         keep: Callable[[dict[str, Any]], bool] = lambda r: True) -> list[tuple[str, dict[str, Any]]]:
    """`k` distinct records of `table` (key agrees with the key field, `keep` holds), or [] when too few."""
    rows = ctx.base[table.name]
    keys = [k_ for k_, r in rows.items() if str(r.get(table.key)) == k_ and keep(r)]
    if len(keys) < k:
        return []
    return [(key, rows[key]) for key in rng.sample(keys, k)]


def identify(ctx: Context, table: TableInfo, key: str, record: dict[str, Any], rng: random.Random,
             search: bool) -> tuple[list[Action], Ref] | None:
    """How the customer names the record: its id (no action), or a unique field a search finds it by."""
    if not search:
        return [], Ref.by_key(table.entity, table.key, key)
    tool = next(iter(ctx.tools_of(table.name, "search")), None)
    if tool is None:
        return None
    searchable = set(tool.parameters[0].enum or ())
    options = []
    for field in table.identifiers:
        value = get_path(record, field.path)
        if field.path in searchable and isinstance(value, str) and value.strip():
            same = sum(as_text(get_path(r, field.path)) == as_text(value) for r in ctx.base[table.name].values())
            if same == 1:
                options.append((field, value))
    if not options:
        return None
    field, value = rng.choice(options)
    return [(tool.name, {"field": field.path, "value": value})], Ref.by_field(table.entity, key, field.label, value)


def askable(table: TableInfo, record: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value as text) of the record's fields a customer could ask about and an agent could read out."""
    view = record_view(record)
    out = []
    for field in table.fields:
        if field.path == table.key or field.references or field.type == "boolean":
            continue
        value = get_path(view, field.path)
        text = "" if value is None else str(value)
        if 2 <= len(text) <= MAX_VALUE_CHARS and text.strip().lower() not in WEAK:
            out.append((field.label, text))
    return out


def new_value(tool: ToolDef, record: dict[str, Any], rng: random.Random) -> Any:
    """A value the update `tool` may set on `record` (None when none is allowed)."""
    field = tool.field or ""
    current = get_path(record, field)
    param = tool.parameters[1]
    if param.enum:
        allowed = transitions(tool)
        if allowed is not None and current is not None and str(current) in allowed:
            options = [v for v in allowed[str(current)] if v != current]
        else:
            options = [v for v in param.enum if v != current]
        wanted = [v for v in options if v.lower() in templates.VERBS]  # values customers ask for (cancel, freeze)
        if wanted and tool.field and tool.field.rsplit(".", 1)[-1] in ("status", "state"):
            options = wanted
        return rng.choice(options) if options else None
    if "email" in field and isinstance(current, str) and "@" in current:
        local, _, domain = current.partition("@")
        return f"{local}.{rng.randint(2, 99)}@{domain}"
    if "phone" in field and isinstance(current, str) and sum(c.isdigit() for c in current) >= 4:
        return current[:-2] + f"{rng.randint(10, 99)}"
    return None


def transitions(tool: ToolDef) -> dict[str, tuple[str, ...]] | None:
    return next((c.allowed for c in tool.constraints if c.type == "transitions"), None)


def final_of(tool: ToolDef) -> set[str]:
    allowed = transitions(tool) or {}
    return {v for v, nxt in allowed.items() if not nxt}


def search_plan(difficulty: int, base_steps: int, entities: int) -> int | None:
    """How many of `entities` records are found by a search so the task has `difficulty` steps (None: impossible)."""
    searches = difficulty - base_steps
    return searches if 0 <= searches <= entities else None


def as_text(value: Any) -> str:
    return "" if value is None else str(value).strip().lower()


def tables_with(ctx: Context, kind: str) -> list[tuple[TableInfo, list[ToolDef]]]:
    return [(t, tools) for t in ctx.schema.tables if (tools := ctx.tools_of(t.name, kind))]


def plan_reads(ctx: Context, table: TableInfo, picked: list[tuple[str, dict[str, Any]]], searches: int,
           rng: random.Random) -> tuple[list[Action], list[Ref]] | None:
    """Golden reads naming each picked record (the first `searches` found by a search), then a lookup of each."""
    actions: list[Action] = []
    refs = []
    lookup = ctx.tools_of(table.name, "lookup")[0]
    for i, (key, record) in enumerate(picked):
        named = identify(ctx, table, key, record, rng, search=i < searches)
        if named is None:
            return None
        actions += [*named[0], (lookup.name, {lookup.parameters[0].name: key})]
        refs.append(named[1])
    return actions, refs
