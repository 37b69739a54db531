"""Demonstrations for the SFT warm start: trajectories of a good policy, in the policy's own format.

RouterBench: a consult-and-compare policy fit on the training part. Per task type it either answers with one model
directly, or asks two cheap models at once (one turn, two parallel calls) and then gives the first one's answer when
the two agree, else the escalation model's. The fit picks, per task type, the option with the best accuracy whose
cost stays under a share of the escalation model's, among the models the episode's preferences allow; so an "avoid"
preference changes the demonstration, and the student sees instructions that matter.
Imitating the cheapest *correct* model would teach the orchestrator to guess a label it cannot see; a policy that
consults and compares uses only what the orchestrator observes.

The demonstrations are produced by running this policy as a `ScriptedBackend` through the real episode loop, so they
have exactly the messages, tool calls and observations the student will see.
"""

from __future__ import annotations

import functools
import itertools
import json
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from orchestra.answers import extract_choice
from orchestra.backends.scripted import ScriptedBackend
from orchestra.envs.routerbench.env import Row, shown_letter
from orchestra.toolcalls import render_hermes
from orchestra.types import Message


@dataclass(frozen=True, slots=True)
class Route:
    """What to do for one task type: `direct` alone, or consult `pair` and escalate to `escalate` on disagreement."""

    direct: str | None = None
    pair: tuple[str, str] | None = None
    escalate: str | None = None


@dataclass(frozen=True)
class ConsultPolicy:
    routes: dict[str, Route]

    def route(self, task_type: str) -> Route:
        return self.routes[task_type]


def fit_consult_policy(
    rows: Sequence[Row], *, allowed: Iterable[str] | None = None, escalate: str = "gpt-4",
    max_cost_share: float = 0.3, max_pair_price_usd: float = 0.001,
    price_factors: Mapping[str, float] | None = None,
) -> ConsultPolicy:
    """The best-accuracy routes (one per task type) whose total cost is at most `max_cost_share` of always asking
    `escalate` (or, when it is not allowed, the most accurate allowed model). Solved as a Lagrangian sweep: for each
    price of accuracy λ, every task type takes the route maximizing accuracy - λ·cost; the best sweep point within
    the budget wins (ties go to the cheaper). `price_factors` reprice models (recorded cost x factor)."""
    if price_factors:
        rows = [r.repriced(price_factors) for r in rows]
    models = sorted({m for r in rows for m in r.records})
    allowed_set = set(allowed) if allowed is not None else set(models)
    groups = {t: [r for r in rows if r.task_type == t] for t in sorted({r.task_type for r in rows})}
    scored: dict[str, list[tuple[float, float, Route]]] = {}
    top_cost = 0.0
    for task_type, group in groups.items():
        top = escalate if escalate in allowed_set else _best_direct(group, allowed_set)
        top_cost += _mean_cost(group, top) * len(group)
        cheap = [m for m in models if m in allowed_set and m != top and _mean_cost(group, m) <= max_pair_price_usd]
        options = [Route(direct=m) for m in sorted(allowed_set) if m in models]
        if any(extract_choice(r.records[m].response) for r in group[:20] for m in r.records):
            options += [Route(pair=(a, b), escalate=top) for a, b in itertools.permutations(cheap, 2)]
        scored[task_type] = [(*_score(group, o), o) for o in options]
    budget = max_cost_share * top_cost
    best: tuple[float, float, dict[str, Route]] | None = None
    for lam in [0.0] + [10 ** (k / 8) for k in range(-8, 40)]:
        routes = {t: max(opts, key=lambda x: (x[0] - lam * x[1], -x[1]))[2] for t, opts in scored.items()}
        correct = sum(_pick(scored[t], routes[t])[0] * len(groups[t]) for t in groups)
        cost = sum(_pick(scored[t], routes[t])[1] * len(groups[t]) for t in groups)
        if cost <= budget and (best is None or (correct, -cost) > (best[0], -best[1])):
            best = (correct, cost, routes)
    if best is None:
        cheapest = {t: min(opts, key=lambda x: x[1])[2] for t, opts in scored.items()}
        return ConsultPolicy(cheapest)
    return ConsultPolicy(best[2])


def _pick(options: list[tuple[float, float, Route]], route: Route) -> tuple[float, float]:
    return next((acc, cost) for acc, cost, r in options if r == route)


def consult_backend(policy: ConsultPolicy, task_type_of: dict[str, str] | None = None) -> ScriptedBackend:
    """The policy as an orchestrator: reads the task type from the prompt and the answers from tool messages."""

    def act(messages: Sequence[Message]) -> str:
        task_type = _task_type(messages)
        route = policy.route(task_type)
        answers = [shown_letter(m.content) for m in messages if m.role == "tool"]
        if route.direct is not None:
            return render_hermes("answer", {"model": route.direct})
        assert route.pair is not None and route.escalate is not None
        if not answers:
            return "\n".join(render_hermes("ask", {"model": m}) for m in route.pair)
        agree = len(answers) >= 2 and answers[0] is not None and answers[0] == answers[1]
        return render_hermes("answer", {"model": route.pair[0] if agree else route.escalate})

    return ScriptedBackend(act, model="consult-policy")


def describe(policy: ConsultPolicy) -> str:
    return json.dumps({t: {k: v for k, v in r.__dict__.items() if v} if hasattr(r, "__dict__") else
                       {"direct": r.direct, "pair": r.pair, "escalate": r.escalate}
                       for t, r in policy.routes.items()})


def _task_type(messages: Sequence[Message]) -> str:
    user = next(m.content for m in messages if m.role == "user")
    first = user.splitlines()[0]
    return first.removeprefix("Task:").strip()


def _mean_cost(rows: Sequence[Row], model: str) -> float:
    costs = [r.records[model].cost_usd for r in rows if model in r.records]
    return statistics.fmean(costs) if costs else float("inf")


def _best_direct(rows: Sequence[Row], allowed: set[str]) -> str:
    return max(sorted(allowed), key=lambda m: _score(rows, Route(direct=m))[0])


@functools.cache
def _letter(response: str) -> str | None:
    """`extract_choice`, remembered: a fit scores every candidate route on every training row, and a policy is refit
    for each set of offered models, prices and preference family (the paper sampler's examples nearly all differ)."""
    return extract_choice(response)


def _score(rows: Sequence[Row], route: Route) -> tuple[float, float]:
    """(accuracy, mean cost) of a route replayed on recorded rows; unavailable models count as wrong and free."""
    correct, cost = [], []
    for row in rows:
        rec = row.records
        if route.direct is not None:
            r = rec.get(route.direct)
            correct.append(bool(r and r.correct))
            cost.append(r.cost_usd if r else 0.0)
            continue
        a, b = (rec.get(m) for m in route.pair or ())
        spent = (a.cost_usd if a else 0.0) + (b.cost_usd if b else 0.0)
        letters = [_letter(x.response) if x else None for x in (a, b)]
        if a is not None and letters[0] and letters[0] == letters[1]:
            correct.append(a.correct)
        else:
            top = rec.get(route.escalate or "")
            correct.append(bool(top and top.correct))
            spent += top.cost_usd if top else 0.0
        cost.append(spent)
    return statistics.fmean(correct), statistics.fmean(cost)
