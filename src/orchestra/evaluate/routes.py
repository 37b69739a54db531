"""What an orchestrator did, item by item, summed up: the routes of a run folder (`orchestra routes`).

A route is the sequence of an episode's turns, each the calls it made: `ask(mixtral), ask(yi-34b) -> answer(gpt-4)`
(two calls in one turn, then one). A call shows its `model` argument when it has one (the models it routes to),
otherwise its tool's name alone, so routes over search or code tools group by what was called, not by the query.
An episode that ended with a message and no call in its last turn ends in `final`. Routes are counted per group of
items, a metadata field of each item (`task_type` by default), with how many of them were solved and their mean cost.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestra.errors import ConfigError
from orchestra.evaluate.store import read_items


@dataclass(frozen=True, slots=True)
class RouteCount:
    route: str
    items: int
    solved: int
    cost_usd: float
    """Mean cost per item of the items that took this route."""

    def as_dict(self) -> dict[str, Any]:
        return {"route": self.route, "items": self.items, "solved": self.solved, "cost_per_item_usd": self.cost_usd}


def route_of(trajectory: Mapping[str, Any]) -> str:
    """The route of one stored trajectory (see the module docstring)."""
    steps = []
    for turn in trajectory.get("turns") or ():
        calls = (turn.get("completion") or {}).get("tool_calls") or ()
        steps.append(", ".join(_call(c) for c in calls) if calls else "final")
    return " -> ".join(steps) or "(no turn)"


def _call(call: Mapping[str, Any]) -> str:
    arguments = call.get("arguments")
    model = arguments.get("model") if isinstance(arguments, Mapping) else None
    return f"{call.get('name')}({model})" if model is not None else str(call.get("name"))


def count_routes(items: Sequence[Mapping[str, Any]], by: str = "task_type") -> dict[str, list[RouteCount]]:
    """Per value of the items' metadata field `by` ("all" where it is missing), every route with its counts, the
    most frequent first."""
    tally: dict[str, dict[str, list[float]]] = {}
    for item in items:
        group = str((item.get("metadata") or {}).get(by, "all"))
        entry = tally.setdefault(group, {}).setdefault(route_of(item.get("trajectory") or {}), [0, 0, 0.0])
        entry[0] += 1
        entry[1] += bool(item.get("solved"))
        entry[2] += float(item.get("cost_usd") or 0.0)
    return {group: sorted((RouteCount(route, int(n), int(s), cost / n) for route, (n, s, cost) in routes.items()),
                          key=lambda r: (-r.items, r.route))
            for group, routes in sorted(tally.items())}


def run_routes(run: Path, by: str = "task_type") -> dict[str, list[RouteCount]]:
    """`count_routes` of the items stored in the run folder `run`."""
    items = read_items(run / "items.jsonl")
    if not items:
        raise ConfigError(f"{run}: no items.jsonl with items (give a run folder written by `orchestra eval`)")
    return count_routes(items, by)
