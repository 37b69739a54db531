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

import itertools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from orchestra.backends.base import Sampling
from orchestra.backends.scripted import ScriptedBackend
from orchestra.envs.routerbench.baselines import Outcomes, RuleBaseline
from orchestra.envs.routerbench.data import Row
from orchestra.envs.routerbench.env import ReplayInstance, shown_letter
from orchestra.errors import ConfigError
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
    price_factors: Mapping[str, float] | None = None, stand_ins: Mapping[str, tuple[str, float]] | None = None,
) -> ConsultPolicy:
    """Per task type, the route that trades accuracy for dollars at the teacher's rate λ, among the routes the
    `allowed` models make at the prices `price_factors` set (recorded cost x factor).

    λ is fit once per budget: with every model at its recorded price, the best-accuracy routes whose total cost is
    at most `max_cost_share` of always asking `escalate` (a Lagrangian sweep: for each λ every type takes the route
    maximizing accuracy - λ·cost; the best sweep point within the budget wins, ties to the cheaper). Those routes
    are every type's best over a whole interval of λ, and the middle of it (`_price_of_accuracy`) is the rate. An
    example that rules models out (an avoid preference, a smaller offer) or reprices them keeps the rate: only its
    options and their costs change. So a price change moves a route only toward the repriced model (cheaper) or
    away from it (dearer), and avoiding a provider takes the next-best route at the same rate. Refitting the dollar
    budget per example instead made changes no price or preference calls for (a dearer yi-34b answered alone where
    it had been consulted beside mixtral; with gpt models avoided, a budget of 0.3 x claude-2's cost), which a
    student then has to learn as noise.

    `stand_ins` (model -> (listed model, price ratio)): models the episode introduces as new, "like" a listed model
    at a ratio of its price (`RouterBench.introduce`). The policy plans each as what the request says of it: the
    listed model's outcomes at that ratio of its cost, and never the escalation model by name. So a demonstration
    calls an introduced model where its introduction makes it worth calling, which a student can learn from the
    request, and never on the strength of recorded outcomes the request does not show.

    Routes are scored on arrays of the recorded outcomes (`Outcomes`, built once per row list and reused), so a fit
    takes milliseconds: training refits the policy for every set of offered models, prices and preference family."""
    models, tables = _tables(rows)
    recorded = _scored_options(tables, models, set(models), escalate, max_pair_price_usd, {}, {})
    sizes = {t: len(o.correct) for t, o in tables.items()}
    budget = max_cost_share * sum(cost * sizes[t] for t, cost in recorded.top_cost.items())
    best: tuple[float, float, dict[str, Route]] | None = None
    for lam in [0.0] + [10 ** (k / 8) for k in range(-8, 40)]:
        routes = {t: _best(opts, lam) for t, opts in recorded.options.items()}
        correct = sum(_pick(recorded.options[t], routes[t])[0] * sizes[t] for t in routes)
        cost = sum(_pick(recorded.options[t], routes[t])[1] * sizes[t] for t in routes)
        if cost <= budget and (best is None or (correct, -cost) > (best[0], -best[1])):
            best = (correct, cost, routes)
    allowed_set = set(allowed) if allowed is not None else set(models)
    options = _scored_options(tables, models, allowed_set, escalate, max_pair_price_usd, price_factors or {},
                              stand_ins or {})
    if best is None:
        return ConsultPolicy({t: min(opts, key=lambda x: x[1])[2] for t, opts in options.options.items()})
    lam = _price_of_accuracy(recorded.options, best[2])
    return ConsultPolicy({t: _best(opts, lam) for t, opts in options.options.items()})


@dataclass(frozen=True)
class _Options:
    options: dict[str, list[tuple[float, float, Route]]]
    """Per task type: (accuracy, mean cost, route) of every route considered."""
    top_cost: dict[str, float]
    """Per task type: the mean recorded cost of the escalation model answering alone."""


def _scored_options(tables: Mapping[str, Outcomes], models: Sequence[str], allowed: set[str], escalate: str,
                    max_pair_price_usd: float, price_factors: Mapping[str, float],
                    stand_ins: Mapping[str, tuple[str, float]]) -> _Options:
    """Every route of every task type, scored at the recorded costs x `price_factors`: each allowed model alone, and
    (for letter-answer types) each ordered pair of cheap allowed models escalating to the top model. A model in
    `stand_ins` is scored as its listed model at the given ratio of that model's cost (see `fit_consult_policy`)."""
    factors = np.array([float(price_factors.get(m, 1.0)) for m in models])
    options, top_cost = {}, {}
    for task_type, outcomes in tables.items():
        planned, cost = _planned(outcomes, outcomes.cost_usd * factors, stand_ins)
        group = _Scorer(planned, cost)
        top = escalate if escalate in allowed and escalate not in stand_ins else max(
            sorted(allowed), key=lambda m: group.score(Route(direct=m))[0])
        top_cost[task_type] = _Scorer(outcomes, outcomes.cost_usd).mean_cost(top)
        cheap = [m for m in models if m in allowed and m != top and group.mean_cost(m) <= max_pair_price_usd]
        routes = [Route(direct=m) for m in sorted(allowed) if m in models]
        if (outcomes.letter[:20] > 0).any():
            routes += [Route(pair=(a, b), escalate=top) for a, b in itertools.permutations(cheap, 2)]
        options[task_type] = [(*group.score(r), r) for r in routes]
    return _Options(options, top_cost)


def _planned(outcomes: Outcomes, cost: np.ndarray, stand_ins: Mapping[str, tuple[str, float]],
             ) -> tuple[Outcomes, np.ndarray]:
    """`outcomes` and per-row `cost` with each stand-in's columns those of its listed model (cost x its ratio)."""
    if not stand_ins:
        return outcomes, cost
    index = {m: j for j, m in enumerate(outcomes.models)}
    columns = np.arange(len(outcomes.models))
    ratios = np.ones(len(outcomes.models))
    for model, (like, ratio) in stand_ins.items():
        columns[index[model]], ratios[index[model]] = index[like], ratio
    planned = Outcomes(outcomes.models, outcomes.correct[:, columns], outcomes.available[:, columns],
                       outcomes.cost_usd[:, columns], outcomes.letter[:, columns])
    return planned, cost[:, columns] * ratios


def _best(options: list[tuple[float, float, Route]], lam: float) -> Route:
    return max(options, key=lambda x: (x[0] - lam * x[1], -x[1]))[2]


def _price_of_accuracy(options: Mapping[str, list[tuple[float, float, Route]]], routes: Mapping[str, Route]) -> float:
    """The middle (geometric; one end doubled or halved when the other is open) of the interval of λ for which
    every type's route in `routes` maximizes accuracy - λ·cost among its options."""
    low, high = 0.0, math.inf
    for task_type, route in routes.items():
        accuracy, cost = _pick(options[task_type], route)
        for other_accuracy, other_cost, _ in options[task_type]:
            if other_cost > cost and other_accuracy > accuracy:  # dearer and better: λ must make it not worth it
                low = max(low, (other_accuracy - accuracy) / (other_cost - cost))
            elif other_cost < cost and other_accuracy < accuracy:  # cheaper and worse: λ must not favour it
                high = min(high, (accuracy - other_accuracy) / (cost - other_cost))
    if high == math.inf:
        return 2 * low
    if low == 0.0:
        return high / 2
    return math.sqrt(low * high)


_TABLES: dict[int, tuple[Sequence[Row], tuple[str, ...], dict[str, Outcomes]]] = {}


def _tables(rows: Sequence[Row]) -> tuple[tuple[str, ...], dict[str, Outcomes]]:
    """The models and, per task type, the outcome arrays of `rows`, remembered for the last few row lists (the
    entry keeps its list alive, so its id cannot be reused by another)."""
    entry = _TABLES.get(id(rows))
    if entry is None or entry[0] is not rows:
        models = tuple(sorted({m for r in rows for m in r.records}))
        groups = {t: Outcomes.of([r for r in rows if r.task_type == t], models)
                  for t in sorted({r.task_type for r in rows})}
        while len(_TABLES) >= 4:
            _TABLES.pop(next(iter(_TABLES)))
        entry = _TABLES[id(rows)] = (rows, models, groups)
    return entry[1], entry[2]


class _Scorer:
    """Routes replayed on one task type's outcome arrays, at the given per-row costs; unavailable models count as
    wrong and free."""

    def __init__(self, outcomes: Outcomes, cost: np.ndarray):
        self.o, self.cost = outcomes, cost
        self.index = {m: j for j, m in enumerate(outcomes.models)}

    def mean_cost(self, model: str) -> float:
        j = self.index.get(model)
        have = self.o.available[:, j] if j is not None else None
        return float(self.cost[have, j].mean()) if have is not None and have.any() else float("inf")

    def score(self, route: Route) -> tuple[float, float]:
        o, cost = self.o, self.cost
        if route.direct is not None:
            j = self.index.get(route.direct)
            if j is None:
                return 0.0, 0.0
            return float(o.correct[:, j].mean()), float(cost[:, j].mean())
        a, b = (self.index[m] for m in route.pair or ())
        e = self.index.get(route.escalate or "")
        agree = o.available[:, a] & (o.letter[:, a] > 0) & (o.letter[:, a] == o.letter[:, b])
        top_correct = o.correct[:, e] if e is not None else np.zeros(len(agree))
        top_cost = cost[:, e] if e is not None else np.zeros(len(agree))
        correct = np.where(agree, o.correct[:, a], top_correct)
        spent = cost[:, a] + cost[:, b] + np.where(agree, 0.0, top_cost)
        return float(correct.mean()), float(spent.mean())


def _pick(options: list[tuple[float, float, Route]], route: Route) -> tuple[float, float]:
    return next((acc, cost) for acc, cost, r in options if r == route)


@dataclass(frozen=True)
class Offer:
    """What a task's request says of its models, as the teacher plans with it: the models offered, their price
    factors, the introduced ones as stand-ins (model -> (listed model it is like, price ratio); see
    `fit_consult_policy`) and the names models answer to (model -> handle, for introduced ones)."""

    offered: tuple[str, ...]
    factors: Mapping[str, float]
    stand_ins: Mapping[str, tuple[str, float]]
    names: Mapping[str, str]

    @classmethod
    def of(cls, metadata: Mapping[str, object], models: Sequence[str]) -> Offer:
        aliases: Mapping[str, str] = metadata.get("aliases") or {}  # type: ignore[assignment]
        introduced: Mapping[str, tuple] = metadata.get("new_models") or {}  # type: ignore[assignment]
        return cls(tuple(metadata.get("offered") or models),  # type: ignore[arg-type]
                   dict(metadata.get("price_factors") or {}),  # type: ignore[call-overload]
                   {aliases.get(name, name): (like, ratio) for name, (like, _, _, ratio) in introduced.items()},
                   {real: name for name, real in aliases.items()})

    def key(self) -> tuple[object, ...]:
        return (self.offered, tuple(sorted(self.factors.items())), tuple(sorted(self.stand_ins.items())))


def answer_after(route: Route, letters: Sequence[str | None]) -> str:
    """The model a consult route answers with once its pair has answered `letters` (in call order): the first of
    the pair when both gave the same letter, else the escalation model."""
    assert route.pair is not None and route.escalate is not None
    agree = len(letters) >= 2 and letters[0] is not None and letters[0] == letters[1]
    return route.pair[0] if agree else route.escalate


def consult_backend(policy: ConsultPolicy, names: Mapping[str, str] | None = None) -> ScriptedBackend:
    """The policy as an orchestrator: reads the task type from the prompt and the answers from tool messages, and
    calls each model by its name in `names` (model -> name, for models introduced under another; default its own)."""
    names = names or {}

    def act(messages: Sequence[Message]) -> str:
        task_type = _task_type(messages)
        route = policy.route(task_type)
        answers = [shown_letter(m.content) for m in messages if m.role == "tool"]
        if route.direct is not None:
            return render_hermes("answer", {"model": names.get(route.direct, route.direct)})
        assert route.pair is not None and route.escalate is not None
        if not answers:
            return "\n".join(render_hermes("ask", {"model": names.get(m, m)}) for m in route.pair)
        chosen = answer_after(route, answers)
        return render_hermes("answer", {"model": names.get(chosen, chosen)})

    return ScriptedBackend(act, model="consult-policy")


class Teacher(RuleBaseline):
    """The demonstrations' policy as a baseline (`teacher`): fit on the training rows for each episode's offer (its
    offered models, prices and introduced models, as the demonstrations are), at the demonstrations' default
    budget share, so an evaluation shows what a perfect student of the demonstrations would score. `models`: plan
    with these only (`teacher:<m1>,<m2>,...`). It asks a route's two models one per turn (the demonstrations ask
    both in one turn: the same calls at the same cost). It does not read instructions: evaluate it without an
    avoid preference, or with `models` leaving the avoided ones out."""

    def __init__(self, rows: Sequence[Row], models: Sequence[str] | None = None, name: str = "teacher"):
        known = _tables(rows)[0]
        unknown = sorted(set(models or ()) - set(known))
        if unknown or models == []:
            raise ConfigError(f"baseline {name}: unknown models {unknown} (known: {', '.join(known)})" if unknown
                              else f"baseline {name}: name at least one model")
        self.rows, self.only, self.name = rows, tuple(models) if models else None, name
        self.details = {"models": list(self.only or known)}
        self._policies: dict[tuple[object, ...], ConsultPolicy] = {}

    def decide(self, instance: ReplayInstance, sampling: Sampling) -> tuple[str, str]:
        offer = Offer.of(instance.task.metadata, _tables(self.rows)[0])
        allowed = tuple(m for m in offer.offered if self.only is None or m in self.only)
        key = (allowed, *offer.key())
        if key not in self._policies:
            self._policies[key] = fit_consult_policy(self.rows, allowed=allowed, price_factors=offer.factors,
                                                     stand_ins=offer.stand_ins)
        route, asked = self._policies[key].route(instance.row.task_type), instance.consulted
        if route.direct is not None:
            chosen = route.direct
        elif len(asked) < 2:
            assert route.pair is not None
            model = route.pair[len(asked)]
            return "ask", offer.names.get(model, model)
        else:
            chosen = answer_after(route, [letter for _, letter in asked])
        return "answer", offer.names.get(chosen, chosen)


def describe(policy: ConsultPolicy) -> str:
    return json.dumps({t: {k: v for k, v in r.__dict__.items() if v} if hasattr(r, "__dict__") else
                       {"direct": r.direct, "pair": r.pair, "escalate": r.escalate}
                       for t, r in policy.routes.items()})


def _task_type(messages: Sequence[Message]) -> str:
    user = next(m.content for m in messages if m.role == "user")
    first = user.splitlines()[0]
    return first.removeprefix("Task:").strip()


def score_route(rows: Sequence[Row], route: Route) -> tuple[float, float]:
    """(accuracy, mean cost) of `route` replayed on `rows` at their recorded prices."""
    _, tables = _tables(rows)
    total_correct = total_cost = 0.0
    for outcomes in tables.values():
        correct, cost = _Scorer(outcomes, outcomes.cost_usd).score(route)
        total_correct, total_cost = total_correct + correct * len(outcomes.correct), total_cost + cost * len(
            outcomes.correct)
    return total_correct / len(rows), total_cost / len(rows)
