"""Paired comparison of two runs on the same items: is one really above the other, and at what cost?

Two policies evaluated on the same items differ on only some of them (the discordant items); accuracies that look
apart by a point can be a handful of items either way. `compare_runs` matches the items of two run folders by
(task, trial) and reports:
- wins, losses and ties: items the first run solved and the second did not, the reverse, and the rest;
- the exact McNemar test on the discordant items (two-sided binomial at 1/2): the chance of a split at least this
  lopsided if neither policy were better;
- 95% paired-bootstrap intervals (items resampled with replacement, both runs together) for the accuracy difference,
  the cost-per-query difference in dollars, and the relative cost change (the first run's cost per query over the
  second's, minus one, computed in each resample, so it never goes below -100%).

Runs must hold the same items (task ids and trials); otherwise a `ConfigError` says how many differ. Their
environment configs (`config.env` in results.json) may differ, e.g. in prompt options of orchestrators trained
differently, or in prices; the fields that differ (the data path aside) are reported with the comparison.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from orchestra.errors import ConfigError
from orchestra.evaluate.store import read_items

RESAMPLES = 10_000
"""Bootstrap resamples per interval (seeded, so a comparison prints the same numbers every time)."""


@dataclass(frozen=True)
class Paired:
    """Run `a` against run `b` on `n` shared items (differences are a minus b)."""

    a: str
    b: str
    n: int
    accuracy_a: float
    accuracy_b: float
    cost_a: float
    cost_b: float
    wins: int
    losses: int
    p_value: float
    accuracy_diff_ci: tuple[float, float]
    cost_diff_ci: tuple[float, float]
    cost_change_ci: tuple[float, float] = (0.0, 0.0)
    """95% interval of cost_a / cost_b - 1 (0 where `b` costs nothing)."""
    env_differences: tuple[str, ...] = ()
    """Environment config fields whose values differ between the two runs (`field: a vs b`)."""

    @property
    def accuracy_diff(self) -> float:
        return self.accuracy_a - self.accuracy_b

    @property
    def cost_diff(self) -> float:
        return self.cost_a - self.cost_b

    @property
    def cost_change(self) -> float:
        """`a`'s cost per query relative to `b`'s: cost_a / cost_b - 1 (0 when `b` costs nothing)."""
        return self.cost_a / self.cost_b - 1 if self.cost_b else 0.0

    def verdict(self) -> str:
        """One line: above, below or level, at what cost, and whether the split could be chance (p >= 0.05)."""
        where = "level with" if self.wins == self.losses else "above" if self.wins > self.losses else "below"
        cost = "at no more cost" if self.cost_a <= self.cost_b else "at more cost"
        chance = "significant (p < 0.05)" if self.p_value < 0.05 else "not significant"
        return (f"{self.a} is {where} {self.b} ({self.wins} won, {self.losses} lost of {self.n}), {cost}; "
                f"{chance}, p = {self.p_value:.3g}")

    def as_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "n": self.n, "accuracy_a": self.accuracy_a, "accuracy_b": self.accuracy_b,
                "accuracy_diff": self.accuracy_diff, "accuracy_diff_ci95": list(self.accuracy_diff_ci),
                "cost_per_query_a_usd": self.cost_a, "cost_per_query_b_usd": self.cost_b,
                "cost_diff_usd": self.cost_diff, "cost_diff_ci95_usd": list(self.cost_diff_ci),
                "cost_change": self.cost_change, "cost_change_ci95": list(self.cost_change_ci),
                "wins": self.wins, "losses": self.losses, "ties": self.n - self.wins - self.losses,
                "mcnemar_p": self.p_value, "env_differences": list(self.env_differences), "verdict": self.verdict()}


def table_cells(c: Mapping[str, Any]) -> list[str]:
    """A comparison (`Paired.as_dict()`, as summaries store it) as table cells: won / lost, McNemar p, the accuracy
    difference and the cost change with their 95% intervals."""
    (a_low, a_high), (c_low, c_high) = c["accuracy_diff_ci95"], c["cost_change_ci95"]
    return [f"{c['wins']} / {c['losses']}", f"{c['mcnemar_p']:.3g}",
            f"{c['accuracy_diff']:+.3f} [{a_low:+.3f}, {a_high:+.3f}]",
            f"{c['cost_change']:+.1%} [{c_low:+.1%}, {c_high:+.1%}]"]


def mcnemar_exact_p(wins: int, losses: int) -> float:
    """Two-sided exact McNemar p-value: twice the binomial(wins + losses, 1/2) tail at the smaller count, at most 1."""
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired(a_name: str, b_name: str, solved_a: np.ndarray, solved_b: np.ndarray, cost_a: np.ndarray,
           cost_b: np.ndarray, *, seed: int = 0) -> Paired:
    """The comparison of per-item outcomes (same order in both runs); `solved_*` booleans, `cost_*` dollars."""
    n = len(solved_a)
    if n == 0:
        raise ConfigError(f"{a_name} and {b_name} share no items")
    sa, sb = solved_a.astype(float), solved_b.astype(float)
    wins = int(np.sum(solved_a & ~solved_b))
    losses = int(np.sum(~solved_a & solved_b))
    acc, cost, spent_a, spent_b = _bootstrap_means(np.stack([sa - sb, cost_a - cost_b, cost_a, cost_b]), seed)
    change = np.divide(spent_a, spent_b, out=np.ones_like(spent_a), where=spent_b > 0) - 1
    return Paired(a_name, b_name, n, float(sa.mean()), float(sb.mean()), float(cost_a.mean()), float(cost_b.mean()),
                  wins, losses, mcnemar_exact_p(wins, losses), _interval(acc), _interval(cost), _interval(change))


def _bootstrap_means(rows: np.ndarray, seed: int) -> np.ndarray:
    """`RESAMPLES` bootstrap means of each row of `rows` (items resampled together across rows), drawn in chunks of
    about 2 million indices, so memory stays bounded however many items there are."""
    rng = np.random.default_rng(seed)
    n = rows.shape[1]
    chunk = max(1, 2_000_000 // n)
    means = [rows[:, rng.integers(0, n, size=(min(chunk, RESAMPLES - done), n))].mean(axis=2)
             for done in range(0, RESAMPLES, chunk)]
    return np.concatenate(means, axis=1)


def compare_runs(a: Path, b: Path, *, names: tuple[str, str] | None = None) -> Paired:
    """Run folder `a` against run folder `b` (each with results.json and items.jsonl), named by their labels in
    results.json unless `names` are given."""
    env_a, env_b = _env(a), _env(b)
    differences = tuple(f"{k}: {env_a.get(k)!r} vs {env_b.get(k)!r}"
                        for k in sorted(env_a.keys() | env_b.keys()) if env_a.get(k) != env_b.get(k))
    items_a, items_b = _items(a), _items(b)
    if items_a.keys() != items_b.keys():
        only_a, only_b = len(items_a.keys() - items_b.keys()), len(items_b.keys() - items_a.keys())
        raise ConfigError(f"{a} and {b} hold different items ({only_a} only in the first, {only_b} only in the "
                          "second): compare finished runs of the same tasks and trials")
    keys = sorted(items_a)
    pick = lambda items, field: np.array([items[k][field] for k in keys])  # noqa: E731
    label_a, label_b = names or (run_label(a), run_label(b))
    result = paired(label_a, label_b, pick(items_a, "solved").astype(bool), pick(items_b, "solved").astype(bool),
                    pick(items_a, "cost_usd").astype(float), pick(items_b, "cost_usd").astype(float))
    return replace(result, env_differences=differences)


def _interval(samples: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(samples, [2.5, 97.5])
    return float(low), float(high)


def _results(run: Path) -> dict[str, Any]:
    path = run / "results.json"
    if not path.is_file():
        raise ConfigError(f"{run}: no results.json (not a finished run folder)")
    return json.loads(path.read_text())


def _env(run: Path) -> dict[str, Any]:
    env = (_results(run).get("config") or {}).get("env") or {}
    env = dict(env) if isinstance(env, dict) else {"env": env}  # a bare name, as hand-written results have
    env.pop("data", None)  # where the data lies on this machine; `data_sha256` says what it is
    return env


def run_label(run: Path) -> str:
    """The run's label in its results.json, else its orchestrator spec, else its folder name."""
    config = _results(run).get("config") or {}
    return str(config.get("label") or config.get("spec") or run.name)


def _items(run: Path) -> dict[tuple[str, int], dict[str, Any]]:
    records = read_items(run / "items.jsonl")
    return {(str(r["task_id"]), int(r.get("trial", 0))): r for r in records}
