"""RouterBench replay: ask a model and see its recorded answer, paying its recorded cost.

Data: RouterBench CSVs (one row per prompt; per model `<model>` 0/1 correctness, `<model>|model_response`,
`<model>|total_cost` in dollars). Any CSV of that format works, so other splits load unchanged.

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

import csv
import math
import random
import re
import statistics
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from orchestra.answers import extract_choice
from orchestra.envs.base import Instance, Outcome
from orchestra.errors import ConfigError
from orchestra.task import Task
from orchestra.tools.spec import CostCard, Tool, ToolOutput, tool
from orchestra.types import Trajectory

ALIASES: dict[str, str] = {
    "gpt-4-1106-preview": "gpt-4",
    "gpt-3.5-turbo-1106": "gpt-3.5",
    "claude-v2": "claude-2",
    "claude-v1": "claude-1",
    "claude-instant-v1": "claude-instant",
    "meta/llama-2-70b-chat": "llama-70b",
    "meta/code-llama-instruct-34b-chat": "codellama-34b",
    "mistralai/mixtral-8x7b-chat": "mixtral",
    "mistralai/mistral-7b-chat": "mistral-7b",
    "zero-one-ai/Yi-34B-Chat": "yi-34b",
    "WizardLM/WizardLM-13B-V1.2": "wizardlm-13b",
}
PROVIDERS: dict[str, str] = {
    "gpt-4": "openai", "gpt-3.5": "openai", "claude-2": "anthropic", "claude-1": "anthropic",
    "claude-instant": "anthropic", "llama-70b": "meta", "codellama-34b": "meta", "mixtral": "mistral",
    "mistral-7b": "mistral", "yi-34b": "01-ai", "wizardlm-13b": "wizardlm",
}
_META_COLUMNS = {"", "sample_id", "prompt", "eval_name", "oracle_model_to_route_to"}
MAX_CODE_CHARS = 300
MAX_QUESTION_CHARS = 600


@dataclass(frozen=True, slots=True)
class Record:
    """One model's recorded result on one row."""

    correct: bool
    cost_usd: float
    response: str

    def repriced(self, factor: float) -> Record:
        """The same answer billed at `factor` times the recorded price (the same tokens at a new price)."""
        return self if factor == 1.0 else Record(self.correct, self.cost_usd * factor, self.response)


@dataclass(frozen=True, slots=True)
class Row:
    id: str
    task_type: str
    question: str
    records: Mapping[str, Record]
    """By model alias; models with a missing outcome are absent."""

    def repriced(self, factors: Mapping[str, float]) -> Row:
        """This row with every model's recorded cost multiplied by its factor (default 1)."""
        records = {m: r.repriced(factors.get(m, 1.0)) for m, r in self.records.items()}
        return Row(self.id, self.task_type, self.question, records)

    @property
    def gold_choice(self) -> str | None:
        """The choice letter correct models gave (most common), for multiple-choice rows."""
        letters = [extract_choice(r.response) for r in self.records.values() if r.correct]
        letters = [x for x in letters if x]
        return max(set(letters), key=letters.count) if letters else None


def load_rows(paths: str | Path | Iterable[str | Path]) -> list[Row]:
    """Rows of one CSV, of every `*.csv` in a folder, or of several paths."""
    if isinstance(paths, str | Path):
        path = Path(paths)
        files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
    else:
        files = [Path(p) for p in paths]
    if not files:
        raise ConfigError(f"routerbench data: no CSV files at {paths}")
    csv.field_size_limit(sys.maxsize)
    rows: list[Row] = []
    for file in files:
        if not file.exists():
            raise ConfigError(f"routerbench data: {file} does not exist")
        with file.open(newline="") as handle:
            for raw in csv.DictReader(handle):
                rows.append(_row(raw, file))
    return _merge_duplicates(rows)


def _merge_duplicates(rows: list[Row]) -> list[Row]:
    """One row per sample id. The ARC CSV holds a few ids twice, split between a row with ten models' outcomes and a
    row with only GPT-4's; merged (the first row's records win a clash) so that ids are unique and `start(task)`
    grades the row the task came from."""
    merged: dict[str, Row] = {}
    for row in rows:
        first = merged.get(row.id)
        merged[row.id] = row if first is None else Row(
            first.id, first.task_type, first.question, {**row.records, **first.records})
    return list(merged.values())


def _row(raw: Mapping[str, str], file: Path) -> Row:
    models = [c for c in raw if c not in _META_COLUMNS and "|" not in c]
    records = {}
    for name in models:
        outcome, cost = raw.get(name, ""), raw.get(f"{name}|total_cost", "")
        if outcome == "" or cost == "":
            continue
        try:
            correct, paid = float(outcome) >= 0.5, float(cost)
        except ValueError:
            raise ConfigError(f"routerbench data: {file}, sample {raw.get('sample_id', '?')!r}: model {name!r} has "
                              f"outcome {outcome!r} and cost {cost!r}; both must be numbers (an empty cell means "
                              "no record)") from None
        records[ALIASES.get(name, name)] = Record(correct, paid, _unwrap(raw.get(f"{name}|model_response", "")))
    if "sample_id" not in raw:
        raise ConfigError(f"routerbench data: {file} has no `sample_id` column")
    return Row(raw["sample_id"], raw.get("eval_name", file.stem), last_question(raw.get("prompt", "")), records)


def _unwrap(text: str) -> str:
    """Responses and prompts are stored as the repr of a one-element Python list: `['...']`."""
    text = text.strip()
    if len(text) >= 4 and text[:2] in ("['", '["') and text[-2:] in ("']", '"]'):
        text = text[2:-2]
    return text.replace("\\n", "\n").replace("\\'", "'").replace('\\"', '"')


def last_question(prompt: str) -> str:
    """The question being asked: few-shot prompts end with it after the last blank line."""
    text = _unwrap(prompt).strip()
    blocks = [b for b in text.split("\n\n") if b.strip()]
    question = blocks[-1] if blocks else text
    question = re.sub(r"\n?Print only a single choice.*$", "", question, flags=re.DOTALL).strip()
    question = re.sub(r"\n?Answer:\s*$", "", question).strip()
    return question[:MAX_QUESTION_CHARS]


def split_rows(rows: Sequence[Row], dev_fraction: float, seed: int = 0) -> tuple[list[Row], list[Row]]:
    """(train, dev): a seeded shuffle stratified by task type, so both parts keep the task mix."""
    rng = random.Random(seed)
    train, dev = [], []
    for task_type in sorted({r.task_type for r in rows}):
        group = [r for r in rows if r.task_type == task_type]
        rng.shuffle(group)
        cut = round(len(group) * dev_fraction)
        dev += group[:cut]
        train += group[cut:]
    return train, dev


@dataclass(frozen=True)
class ModelStats:
    """Per model: mean recorded cost per query and accuracy per task type, from the rows it was fit on."""

    mean_cost_usd: Mapping[str, float]
    accuracy: Mapping[str, Mapping[str, float]]

    @classmethod
    def fit(cls, rows: Sequence[Row]) -> ModelStats:
        models = sorted({m for r in rows for m in r.records})
        cost = {m: statistics.fmean(r.records[m].cost_usd for r in rows if m in r.records) for m in models}
        accuracy: dict[str, dict[str, float]] = {}
        for m in models:
            per_type: dict[str, float] = {}
            for t in sorted({r.task_type for r in rows}):
                outcomes = [r.records[m].correct for r in rows if r.task_type == t and m in r.records]
                if outcomes:
                    per_type[t] = statistics.fmean(outcomes)
            accuracy[m] = per_type
        return cls(cost, accuracy)

    def describe(self, model: str, price_factor: float = 1.0, name: str | None = None) -> str:
        """One line on `model` (called `name`, default its own): price per 1k queries, accuracy per task type."""
        acc = ", ".join(f"{t} {a:.0%}" for t, a in self.accuracy[model].items())
        return f"{name or model}: ${self.mean_cost_usd[model] * price_factor * 1000:.2f} per 1k queries; accuracy {acc}"


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
        price over that model's). `aliases` (name -> model) gives some of them another name, the only one they
        answer to in the episode (training and `new_models` use the handles new1, new2, ...: a model behind a
        handle is called by reading its introduction, which is what lets a student call a model it never saw)."""
        offered = tuple(task.metadata.get("offered") or self.models)
        named = {real: name for name, real in (aliases or {}).items()}
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
        metadata = {**task.metadata, "offered": offered, "new_models": introduced,
                    "prices_per_1k": {m: p for m, p in task.metadata["prices_per_1k"].items() if m not in new}}
        if aliases:
            metadata["aliases"] = dict(aliases)
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
        hidden = set(aliases.values())
        names = {**{m: m for m in offered if m not in hidden}, **aliases}
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
