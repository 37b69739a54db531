"""RouterBench replay: ask a model and see its recorded answer, paying its recorded cost.

Data: RouterBench CSVs read by `orchestra.envs.routerbench.data` (rows, the split, the training-part statistics).

Tools of every task
- `ask(model)`: returns the model's recorded answer (the parsed choice letter for multiple-choice tasks, the code cut to
  a few hundred characters for MBPP) and charges the recorded cost of that call. A multiple-choice answer also says
  whether it agrees with the models asked before it in the episode: `B (disagrees with mixtral: A)`,
  `A (agrees with mixtral)`. Comparing answers is what a router does with them; stating the comparison lets a small
  orchestrator learn when to escalate from a few hundred examples instead of learning letter equality first.
  Parallel calls of one turn are compared in call order (the tools are coroutines run in that order).
- `answer(model)`: ends the episode with that model's recorded response; charges its cost unless this episode already
  asked that model (a recorded answer is paid once).
Outcome = the recorded correctness of the model whose answer was given. A model whose outcome is missing for a row
is unavailable for that row (asking it is an error observation), never counted correct.

A final message instead of `answer(...)` is graded against the row's gold letter when one can be inferred (the
answer a correct model gave, for multiple-choice rows) and is wrong otherwise (MBPP has no gold in the data).

Model descriptions (price and per-task accuracy) come from `ModelStats`, computed on the training part only, so no
evaluation row leaks into what the orchestrator is told.

A task may offer a subset of the models and reprice them (`RouterBench.offer`, how training varies the pool per
example): its metadata then holds `offered` (asking any other model is an error observation) and `price_factors`
(a model's recorded cost is multiplied by its factor, i.e. the same tokens billed at a new price), and the prices the
prompt shows are the repriced ones. `RouterBench.introduce` then takes some offered models out of the price list and
introduces them in the request as new models (`new_models`) under handles (`aliases`: new1, new2, ...): such a model
answers to its handle alone, while costs, grading and the call counts name the model itself.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

from orchestra.answers import extract_choice
from orchestra.envs.base import Instance, Outcome
from orchestra.envs.routerbench.data import ModelStats, Record, Row
from orchestra.errors import ConfigError
from orchestra.task import Task
from orchestra.tools.spec import CostCard, Tool, ToolOutput, tool
from orchestra.types import Trajectory

MAX_CODE_CHARS = 300


@dataclass(frozen=True)
class ReplayInstance(Instance):
    """An episode's instance, with the row it replays and its record of `ask` calls (rule baselines read them).

    `consulted` lists every `ask` call in call order as (model, the letter it answered or None when the call was
    refused or the answer is not a letter)."""

    row: Row = field(default=None)  # type: ignore[assignment]
    consulted: list[tuple[str, str | None]] = field(default_factory=list)


@dataclass
class RouterBench:
    """The `routerbench` environment over a list of rows (see `load_rows`, `split_rows`)."""

    rows: Sequence[Row]
    stats: ModelStats
    name: str = "routerbench"
    models: tuple[str, ...] = field(default=())
    describe_accuracy: bool = False
    """Tasks also carry each model's training-part accuracy on their task type (`accuracy_on_type`, in percent),
    which the compact prompt lists beside the price."""
    mark_price_changes: bool = False
    """Repriced tasks also carry their factors away from the recorded prices (`price_changes`, only the models whose
    factor is not 1), which the compact prompt says in the request."""

    def __post_init__(self) -> None:
        self.models = self.models or tuple(sorted(self.stats.mean_cost_usd))
        self._by_id = {r.id: r for r in self.rows}

    def tasks(self, split: str | None = None) -> list[Task]:
        return [self.task(r) for r in self.rows]

    def task(self, row: Row) -> Task:
        prompt = f"Task: {row.task_type}\n{row.question}"
        prices = {m: round(self.stats.mean_cost_usd[m] * 1000, 4) for m in self.models}
        metadata: dict[str, object] = {"task_type": row.task_type, "prices_per_1k": prices}
        if self.describe_accuracy:
            metadata["accuracy_on_type"] = {m: round(100 * self.stats.accuracy[m].get(row.task_type, 0.0))
                                            for m in self.models}
        return Task(id=row.id, prompt=prompt, metadata=metadata)

    def offer(self, task: Task, models: Sequence[str] | None = None,
              price_factors: Mapping[str, float] | None = None) -> Task:
        """`task` offering only `models` (default: all), each repriced by its factor in `price_factors` (default 1)."""
        unknown = (set(models or ()) | set(price_factors or {})) - set(self.models)
        if unknown:
            raise ConfigError(f"routerbench offer: unknown models {sorted(unknown)} (known: {', '.join(self.models)})")
        offered = tuple(m for m in self.models if models is None or m in models)
        if not offered:
            raise ConfigError("routerbench offer: no model offered")
        factors = {m: float((price_factors or {}).get(m, 1.0)) for m in offered}
        if any(f <= 0 for f in factors.values()):
            raise ConfigError("routerbench offer: price factors must be positive")
        prices = {m: round(self.stats.mean_cost_usd[m] * factors[m] * 1000, 4) for m in offered}
        metadata = {**task.metadata, "offered": offered, "price_factors": factors, "prices_per_1k": prices}
        if self.mark_price_changes:
            metadata["price_changes"] = {m: f for m, f in factors.items() if f != 1.0}
        if "accuracy_on_type" in metadata:
            metadata["accuracy_on_type"] = {m: metadata["accuracy_on_type"][m] for m in offered}
        return replace(task, metadata=metadata)

    def introduce(self, task: Task, new: Sequence[str], aliases: Mapping[str, str] | None = None) -> Task:
        """`task` with the offered models `new` out of the price list, introduced in the request instead as new
        models, each beside the listed model closest to it in training-part accuracy on the task's type (ties to
        the closer price): `new_models` maps the name it goes by to (that model, both accuracies in percent, its
        price over that model's). `aliases` (name -> model; default `new_handles(new)`) are the names they answer
        to in the episode, the only ones: a model behind a handle is called by reading its introduction, which is
        what lets a student call a model it never saw."""
        offered = tuple(task.metadata.get("offered") or self.models)
        aliases = new_handles(new) if aliases is None else aliases
        named = {real: name for name, real in aliases.items()}
        unknown = sorted((set(new) | set(named)) - set(offered))
        if unknown or not set(named) <= set(new):
            raise ConfigError(f"routerbench new models: {unknown or sorted(set(named) - set(new))} "
                              f"{'not offered' if unknown else 'aliased but not new'} (offered: {', '.join(offered)})")
        clash = sorted(set(named.values()) & set(self.models))
        if clash:
            raise ConfigError(f"routerbench new models: aliases {clash} are names of models")
        listed = [m for m in offered if m not in new]
        if not listed:
            raise ConfigError("routerbench new models: every offered model is new; at least one must be listed")
        factors = task.metadata.get("price_factors") or {}
        task_type = str(task.metadata["task_type"])

        def accuracy(m: str) -> int:
            return round(100 * self.stats.accuracy[m].get(task_type, 0.0))

        def price(m: str) -> float:
            return self.stats.mean_cost_usd[m] * factors.get(m, 1.0)

        introduced = {}
        for m in new:
            like = min(listed, key=lambda k: (abs(accuracy(k) - accuracy(m)), abs(math.log(price(k) / price(m)))))
            introduced[named.get(m, m)] = (like, accuracy(m), accuracy(like), price(m) / price(like))
        metadata = {**task.metadata, "offered": offered, "new_models": introduced, "aliases": dict(aliases),
                    "prices_per_1k": {m: p for m, p in task.metadata["prices_per_1k"].items() if m not in new}}
        if "accuracy_on_type" in metadata:
            metadata["accuracy_on_type"] = {m: a for m, a in metadata["accuracy_on_type"].items() if m not in new}
        return replace(task, metadata=metadata)

    def row(self, task_id: str) -> Row:
        return self._by_id[task_id]

    def start(self, task: Task) -> Instance:
        row = self._by_id[task.id]
        asked: dict[str, str | None] = {}
        offered = tuple(task.metadata.get("offered") or self.models)
        factors = dict(task.metadata.get("price_factors") or {})
        aliases = dict(task.metadata.get("aliases") or {})
        names = {**{m: m for m in offered if m not in aliases.values()}, **aliases}
        consulted: list[tuple[str, str | None]] = []
        tools = self._tools(row, asked, names, factors, consulted)

        async def grade(trajectory: Trajectory) -> Outcome:
            return grade_row(row, trajectory)

        return ReplayInstance(task, tools, grade, row=row, consulted=consulted)

    def _tools(self, row: Row, asked: dict[str, str | None], names: Mapping[str, str],
               factors: Mapping[str, float], consulted: list[tuple[str, str | None]]) -> list[Tool]:
        """The episode's tools over the offered models, by the names they answer to (`names`: name -> model; a
        model introduced under an alias answers to it alone). `asked` maps each name asked so far to the letter it
        answered (None: not a letter); `consulted` and the outputs' targets name the models themselves."""
        listing = "\n".join(self.stats.describe(m, factors.get(m, 1.0), name) for name, m in names.items())
        multiple_choice = row.task_type != "mbpp"
        hidden = {m for name, m in names.items() if name != m}

        def record(name: str) -> tuple[str, Record]:
            model = names.get(name)
            if model is None:
                if name not in self.models or name in hidden:
                    raise ValueError(f"unknown model {name!r}; models: {', '.join(names)}")
                raise ValueError(f"{name} is not offered for this task; models: {', '.join(names)}")
            if model not in row.records:
                raise ValueError(f"{name} is unavailable for this question")
            return model, row.records[model].repriced(factors.get(model, 1.0))

        async def ask(model: str) -> ToolOutput:
            """Ask one model the question and read its answer.

            Args:
                model: the model to ask
            """
            try:
                real, rec = record(model)
            except ValueError:
                consulted.append((names.get(model, model), None))
                raise
            cost = 0.0 if model in asked else rec.cost_usd
            shown = show_answer(rec.response, multiple_choice)
            letter = extract_choice(rec.response) if multiple_choice else None
            earlier = {m: x for m, x in asked.items() if m != model}
            asked[model] = letter
            consulted.append((real, letter))
            if letter is not None and earlier:
                shown = f"{letter} ({compare_answers(letter, earlier)})"
            return ToolOutput(shown, cost_usd=cost, target=real)

        async def answer(model: str) -> ToolOutput:
            """Give this model's answer as the final answer (paid once: free if you already asked it).

            Args:
                model: the model whose answer is final
            """
            real, rec = record(model)
            cost = 0.0 if model in asked else rec.cost_usd
            asked.setdefault(model, None)
            return ToolOutput(rec.response, cost_usd=cost, terminal=True, target=real)

        def worst_case(arguments: Mapping[str, object]) -> float:
            model = str(arguments.get("model"))
            try:
                return 0.0 if model in asked else record(model)[1].cost_usd
            except ValueError:  # refused before it is paid
                return 0.0

        card = CostCard()
        return [
            tool(ask, description=f"Ask one model and read its answer. Models:\n{listing}", cost=card,
                 kind="generalist", max_cost=worst_case),
            tool(answer, cost=card, kind="generalist", max_cost=worst_case),
        ]


def new_handles(models: Sequence[str]) -> dict[str, str]:
    """The names models introduced as new answer to, in order: {"new1": first, "new2": second, ...}. A handle is a
    word a small student writes as easily as a model it knows (made-up model names had to be copied letter by letter,
    and a student trained on 576 demonstrations wrote its own variants of them)."""
    return {f"new{i}": m for i, m in enumerate(models, 1)}


def show_answer(response: str, multiple_choice: bool) -> str:
    """What the orchestrator reads of a recorded response: the choice letter, or the code cut short."""
    if multiple_choice:
        letter = extract_choice(response)
        return letter if letter else response[:80]
    return response if len(response) <= MAX_CODE_CHARS else response[:MAX_CODE_CHARS] + " ..."


_SHOWN = re.compile(r"^([A-E])(?: \(|$)")


def shown_letter(content: str) -> str | None:
    """The letter an `ask` observation shows (`B`, or `B (disagrees with yi-34b: A)`), None for code or a response
    without a letter: the inverse of `show_answer` and `compare_answers`, for policies reading their own
    observations (parsing the comparison note as free text would find no letter in it)."""
    match = _SHOWN.match(content)
    return match.group(1) if match else None


def compare_answers(letter: str, earlier: Mapping[str, str | None]) -> str:
    """How `letter` compares with earlier answers: "agrees with a, b" or "disagrees with a: B, b: C" (the models
    that gave another answer; those that agree are not listed then)."""
    differ = {m: x or "?" for m, x in earlier.items() if x != letter}
    if not differ:
        return "agrees with " + ", ".join(earlier)
    return "disagrees with " + ", ".join(f"{m}: {x}" for m, x in differ.items())


def grade_row(row: Row, trajectory: Trajectory) -> Outcome:
    """Solved iff the final answer is a recorded-correct model's (or, as a final message, the gold letter)."""
    answered = next((o for o in reversed(trajectory.observations) if o.terminal and not o.is_error), None)
    if answered is not None and answered.target is not None:
        correct = row.records[answered.target].correct
        return Outcome(correct, float(correct), {"outcome": float(correct)}, details=f"answered with {answered.target}")
    if trajectory.final_answer:
        gold = row.gold_choice
        guess = extract_choice(trajectory.final_answer)
        correct = gold is not None and guess == gold
        return Outcome(correct, float(correct), {"outcome": float(correct)}, details="final message")
    return Outcome(False, 0.0, {"outcome": 0.0}, details=f"no answer ({trajectory.termination})")
