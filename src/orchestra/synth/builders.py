"""Task builders for procedural synthesis: one per task kind, each drafting a task of a given difficulty.

A builder picks records at random (its own seeded `random.Random`) and returns a `Draft` (golden actions, what to
communicate, the user scenario, the refused change if any) with exactly `difficulty` golden actions, or None when the
domain has no candidate for it (no update tool, no final status...). Drafts are not trusted: `procedural.verify`
replays every one. The record picking and read planning they share are in `drafting`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from orchestra.envs.tau.domains.derived import ToolDef, get_path
from orchestra.synth import templates
from orchestra.synth.drafting import (
    WEAK,
    Action,
    Context,
    Draft,
    as_text,
    askable,
    final_of,
    new_value,
    pick,
    plan_reads,
    search_plan,
    tables_with,
)
from orchestra.synth.schema_infer import TableInfo
from orchestra.synth.templates import Ref, Scenario

REFUSAL_REASONS = ("final_status", "policy_frozen")
"""A change to a final status, or to a field the policy freezes. (Asking for the value a field already has is left
out: the value to communicate would be the customer's own words, so an agent echoing the request would pass.)"""


@dataclass(frozen=True, slots=True)
class Builder:
    kind: str
    difficulties: frozenset[int]
    build: Callable[[Context, random.Random, int], Draft | None]


# ---- builders ----------------------------------------------------------------------------------------------------

def build_read(ctx: Context, rng: random.Random, difficulty: int) -> Draft | None:
    entities = rng.choice([e for e in (1, 2, 3, 4) if search_plan(difficulty, e, e) is not None])
    table = rng.choice(ctx.schema.tables)
    picked = pick(ctx, table, rng, entities, keep=lambda r: len(askable(table, r)) >= 2)
    if not picked:
        return None
    labels = [label for label, _ in askable(table, picked[0][1])]
    chosen = rng.sample(labels, rng.choice((1, 2)) if entities == 1 else 1)
    values = [dict(askable(table, r)) for _, r in picked]
    if any(label not in v for v in values for label in chosen):
        return None
    if len({v[label] for v in values for label in chosen}) < len(values) * len(chosen):
        return None  # the same answer for several records could be guessed once for all
    plan = plan_reads(ctx, table, picked, difficulty - entities, rng)
    if plan is None:
        return None
    actions, refs = plan
    info = tuple(dict.fromkeys(v[label] for v in values for label in chosen))
    return Draft("read", tuple(actions), info, templates.ask(refs, chosen),
                 f"tell the customer the {' and '.join(chosen)} of {len(picked)} {table.entity}(s)")


def build_read_parent(ctx: Context, rng: random.Random, difficulty: int) -> Draft | None:
    children = [t for t in ctx.schema.tables if t.references]
    if not children:
        return None
    table = rng.choice(children)
    ref = rng.choice(table.references)
    parent = ctx.schema.table(ref.references or "")
    picked = pick(ctx, table, rng, keep=lambda r: str(get_path(r, ref.path)) in ctx.base[parent.name])
    if not picked:
        return None
    parent_key = str(get_path(picked[0][1], ref.path))
    facts = askable(parent, ctx.base[parent.name][parent_key])
    plan = plan_reads(ctx, table, picked, search_plan(difficulty, 2, 1) or 0, rng)
    if not facts or plan is None or len(plan[0]) + 1 != difficulty:
        return None
    label, value = rng.choice(facts)
    lookup = ctx.tools_of(parent.name, "lookup")[0]
    actions = [*plan[0], (lookup.name, {lookup.parameters[0].name: parent_key})]
    return Draft("read", tuple(actions), (value,), templates.ask(plan[1], [label], of=f"the {parent.entity}"),
                 f"follow a {table.entity}'s {ref.label} to its {parent.entity} and tell its {label}")


def build_write(ctx: Context, rng: random.Random, difficulty: int, *, records: int = 1) -> Draft | None:
    options = tables_with(ctx, "update")
    if not options:
        return None
    table, tools = rng.choice(options)
    n_updates = rng.choice([u for u in (1, 2) if u <= len(tools)]) if records == 1 else 1
    searches = search_plan(difficulty, records * (1 + n_updates), records)
    if searches is None:
        return None
    chosen = rng.sample(tools, n_updates)
    picked = pick(ctx, table, rng, records)
    plan = plan_reads(ctx, table, picked, searches, rng) if picked else None
    if plan is None:
        return None
    actions, changes = [], []
    for (key, record), step in zip(picked, _per_record(plan[0], records), strict=True):
        actions += step
        for tool in chosen:
            value = new_value(tool, record, rng)
            if value is None:
                return None
            actions.append((tool.name, {tool.parameters[0].name: key, tool.parameters[1].name: value}))
            changes.append((_label(ctx, table, tool), str(value)))
    kind = "multi" if records > 1 else "write"
    scenario = templates.change(plan[1], changes[:n_updates]) if records == 1 else _multi_scenario(plan[1], changes)
    return Draft(kind, tuple(actions), (), scenario, f"read, then change {n_updates} field(s) of {records} "
                 f"{table.entity}(s)")


def build_multi(ctx: Context, rng: random.Random, difficulty: int) -> Draft | None:
    return build_write(ctx, rng, difficulty, records=2)


def build_refusal(ctx: Context, rng: random.Random, difficulty: int) -> Draft | None:
    mixed = difficulty >= 3
    reason = rng.choice(REFUSAL_REASONS)
    blocked = _blocked_change(ctx, rng, reason)
    if blocked is None:
        return None
    table, key, record, tool, value, current, label = blocked
    plan = plan_reads(ctx, table, [(key, record)], 1 if difficulty in (2, 4) else 0, rng)
    if plan is None:
        return None
    actions, refs = plan
    refused = (tool.name, {tool.parameters[0].name: key, tool.parameters[1].name: value}) if tool else None
    allowed_refs, changes = [], []
    if mixed:
        allowed = _allowed_change(ctx, rng, table, exclude=key)
        if allowed is None:
            return None
        actions = [*allowed[0], *actions]
        allowed_refs, changes = [allowed[1]], [allowed[2]]
    scenario = templates.change(allowed_refs, changes, refused=refs, refused_change=(label, str(value)),
                                policy=reason == "policy_frozen")
    return Draft("refusal", tuple(actions), (current,), scenario, f"refuse a change ({reason}) and say why",
                 refused=refused, refusal_reason=reason, mixed=mixed)


def build_create(ctx: Context, rng: random.Random, difficulty: int) -> Draft | None:
    options = tables_with(ctx, "create")
    if not options:
        return None
    table, (tool,) = rng.choice(options)
    refs = [p for p in tool.parameters if any(c.type == "exists" and c.param == p.name for c in tool.constraints)]
    searches = search_plan(difficulty, len(refs) + 1, len(refs))
    if searches is None:
        return None
    actions: list[Action] = []
    arguments: dict[str, Any] = {}
    parents = []
    for i, param in enumerate(refs):
        parent = ctx.schema.table(next(c.table for c in tool.constraints if c.param == param.name) or "")
        picked = pick(ctx, parent, rng)
        plan = plan_reads(ctx, parent, picked, 1 if i < searches else 0, rng) if picked else None
        if plan is None:
            return None
        actions += plan[0]
        parents += plan[1]
        arguments[param.name] = picked[0][0]
    values = []
    for param in tool.parameters:
        if param.enum:
            arguments[param.name] = rng.choice(param.enum)
            values.append((param.description.removeprefix("The ").rstrip("."), arguments[param.name]))
    actions.append((tool.name, arguments))
    new_key = _next_key(ctx, table)
    return Draft("create", tuple(actions), (new_key,), templates.create(table.entity, parents, values),
                 f"read the parent record(s), create a {table.entity} and give its new id")


def build_delete(ctx: Context, rng: random.Random, difficulty: int) -> Draft | None:
    options = tables_with(ctx, "delete")
    if not options:
        return None
    table, (tool,) = rng.choice(options)
    searches = search_plan(difficulty, 2, 1)
    picked = pick(ctx, table, rng)
    plan = plan_reads(ctx, table, picked, searches or 0, rng) if picked and searches is not None else None
    if plan is None:
        return None
    key = picked[0][0]
    actions = [*plan[0], (tool.name, {tool.parameters[0].name: key})]
    return Draft("delete", tuple(actions), (), templates.delete(plan[1]), f"read, then delete a {table.entity}")


BUILDERS: tuple[Builder, ...] = (
    Builder("read", frozenset({1, 2, 3, 4}), build_read),
    Builder("read", frozenset({2, 3}), build_read_parent),
    Builder("write", frozenset({2, 3, 4}), build_write),
    Builder("multi", frozenset({4}), build_multi),
    Builder("refusal", frozenset({1, 2, 3, 4}), build_refusal),
    Builder("create", frozenset({2, 3, 4}), build_create),
    Builder("delete", frozenset({2, 3}), build_delete),
)
"""Every kind, with the difficulties (numbers of golden actions) it can produce."""


# ---- private -----------------------------------------------------------------------------------------------------

def _blocked_change(ctx: Context, rng: random.Random, reason: str) -> tuple | None:
    """A record and a change the rules forbid: (table, key, record, update tool or None, value, current, label)."""
    if reason == "policy_frozen":
        if not ctx.frozen:
            return None
        frozen = rng.choice(ctx.frozen)
        table = ctx.schema.table(frozen.table)
        field = table.field(frozen.field)
        picked = pick(ctx, table, rng, keep=lambda r: as_text(get_path(r, frozen.field)) not in WEAK)
        if field is None or not field.enum or not picked:
            return None
        key, record = picked[0]
        current = str(get_path(record, frozen.field))
        value = rng.choice([v for v in field.enum if v != current] or [current])
        return table, key, record, None, value, current, field.label
    options = [(t, tool) for t, tools in tables_with(ctx, "update") for tool in tools if tool.parameters[1].enum]
    options = [(t, tool) for t, tool in options if final_of(tool)]
    if not options:
        return None
    table, tool = rng.choice(options)
    field = tool.field or ""
    finals = final_of(tool)
    picked = pick(ctx, table, rng, keep=lambda r: str(get_path(r, field)) in finals and as_text(get_path(r, field))
                  not in WEAK)
    if not picked:
        return None
    key, record = picked[0]
    current = str(get_path(record, field))
    others = [v for v in tool.parameters[1].enum or () if v != current]
    if not others:
        return None
    value = rng.choice(others)
    return table, key, record, tool, value, current, _label(ctx, table, tool)


def _allowed_change(ctx: Context, rng: random.Random, table: TableInfo, exclude: str
                    ) -> tuple[list[Action], Ref, tuple[str, str]] | None:
    tools = ctx.tools_of(table.name, "update")
    if not tools:
        return None
    tool = rng.choice(tools)
    picked = pick(ctx, table, rng, keep=lambda r: str(r.get(table.key)) != exclude)
    plan = plan_reads(ctx, table, picked, 0, rng) if picked else None
    value = new_value(tool, picked[0][1], rng) if picked else None
    if plan is None or value is None:
        return None
    key = picked[0][0]
    action = (tool.name, {tool.parameters[0].name: key, tool.parameters[1].name: value})
    return [*plan[0], action], plan[1][0], (_label(ctx, table, tool), str(value))


def _per_record(actions: list[Action], records: int) -> Iterator[list[Action]]:
    """Split the golden reads of `records` records (each: optional search, then a lookup) per record."""
    current: list[Action] = []
    for action in actions:
        current.append(action)
        if action[0].startswith("get_"):
            yield current
            current = []


def _multi_scenario(refs: list[Ref], changes: list[tuple[str, str]]) -> Scenario:
    wants = [templates.change([r], [c]).reason.removeprefix("You want ").rstrip(".") for r, c in zip(refs, changes,
                                                                                                        strict=True)]
    return Scenario(reason="You want " + "; and you want ".join(wants) + ".", known=templates.known_text(refs),
                    unknown="", behaviour=templates.CONFIRM)


def _label(ctx: Context, table: TableInfo, tool: ToolDef) -> str:
    field = table.field(tool.field or "")
    return field.label if field is not None else str(tool.field)


def _next_key(ctx: Context, table: TableInfo) -> str:
    rows = ctx.base[table.name]
    prefix = ctx.tools.tables[table.name].id_prefix
    n = len(rows) + 1
    while f"{prefix}{n}" in rows:
        n += 1
    return f"{prefix}{n}"
