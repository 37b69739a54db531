"""RouterBench data: recorded outcomes of 11 LLMs read from CSV, the seeded train/dev split, and the per-model
statistics (mean cost, accuracy per task type) fit on the training part.

Data: RouterBench CSVs (one row per prompt; per model `<model>` 0/1 correctness, `<model>|model_response`,
`<model>|total_cost` in dollars). Any CSV of that format works, so other splits load unchanged. Models are named by
short aliases (`ALIASES`); a model with a missing outcome on a row is absent from that row's records.
"""

from __future__ import annotations

import csv
import random
import re
import statistics
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestra.answers import extract_choice
from orchestra.errors import ConfigError

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
