"""RouterBench baselines: rule policies that run through the same episode loop, pay and are graded like any
orchestrator (their own "tokens" cost nothing; every model they ask or answer with is charged its recorded cost).

Policies
- `Always(model)`: `answer(model)`. `cheapest`: `Always` of the model with the lowest mean cost in the environment's
  `ModelStats` (training part). A model unavailable on a row fails that row (its answer call is an error).
- `RandomModel(seed)`: answers with a model drawn uniformly among the row's available ones; the draw is seeded by
  (seed, task id, sampling seed), so it does not depend on order, concurrency or resumption.
- `Oracle()`: replay only; the cheapest model recorded correct on the row (the cheapest available one if none is).
- `Cascade(models, cascades)`: FrugalGPT-style. Multiple-choice rows: ask m1, m2, ... in order and stop as soon as
  two consecutive models gave the same letter, answering with the later one (already paid, so free); the last
  model's answer is final. MBPP rows: answer with the first model (code answers cannot be compared by their
  letters). `cascades` maps a task type (or `*`) to its model list; `fit_cascades` finds one per task type on
  training rows.
- `Knn(router)`: a k-nearest-neighbour router (`KnnRouter`: TF-IDF over the task text, numpy only) choosing the model
  that maximizes mean recorded correctness among the neighbours minus lambda x their mean cost, then answering with it.
- `teacher[:m1,m2,...]`: the demonstrations' consult-and-compare policy (`demonstrations.Teacher`), what a perfect
  student of the SFT demonstrations would score.

Each policy is an `InstancePolicy`: the batch runner binds it to the episode's `ReplayInstance`, so it reads the row
and the answers its `ask` calls got from the instance's own records (`ReplayInstance.consulted`), never from prompt or
tool-message text.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from orchestra.answers import extract_choice
from orchestra.backends.base import ChatBackend, Sampling
from orchestra.envs.routerbench.data import Row
from orchestra.envs.routerbench.env import ReplayInstance
from orchestra.errors import ConfigError
from orchestra.task import Instance
from orchestra.tools.spec import ToolSpec
from orchestra.types import Completion, Message, ToolCall


class RuleBaseline:
    """A free, deterministic policy: `decide(instance, sampling)` returns the next (tool, model) call.
    `details` is what an evaluation records about it (the fitted parameters)."""

    name = "baseline"
    details: Mapping[str, object] = {}

    @property
    def model(self) -> str:
        return self.name

    def for_instance(self, instance: Instance) -> ChatBackend:
        if not isinstance(instance, ReplayInstance):
            raise ConfigError(f"baseline {self.name}: replays RouterBench rows; this task is not one")
        return _Bound(self, instance)

    def decide(self, instance: ReplayInstance, sampling: Sampling) -> tuple[str, str]:
        raise NotImplementedError


class _Bound:
    """A rule policy bound to one episode. A turn after its `answer` call means that call failed (a successful
    answer ends the episode): the policy then ends without an answer."""

    def __init__(self, policy: RuleBaseline, instance: ReplayInstance):
        self.policy, self.instance, self.turn, self.answered = policy, instance, 0, False

    @property
    def model(self) -> str:
        return self.policy.name

    def max_cost_usd(self, messages: Sequence[Message], tools: Sequence[ToolSpec], sampling: Sampling) -> float:
        return 0.0

    async def complete(self, messages: Sequence[Message], tools: Sequence[ToolSpec], sampling: Sampling) -> Completion:
        if self.answered:
            return Completion(text="", model=self.model)
        tool, model = self.policy.decide(self.instance, sampling)
        self.answered = tool == "answer"
        call = ToolCall(f"{tool}_{self.turn}", tool, {"model": model})
        self.turn += 1
        return Completion(text="", tool_calls=(call,), model=self.model)


class Always(RuleBaseline):
    def __init__(self, model: str, name: str | None = None):
        self.answer_model = model
        self.name = name or f"always:{model}"
        self.details = {"model": model}

    def decide(self, instance: ReplayInstance, sampling: Sampling) -> tuple[str, str]:
        return "answer", self.answer_model


def cheapest(models: Sequence[str], mean_cost_usd: Mapping[str, float]) -> Always:
    return Always(min(models, key=lambda m: mean_cost_usd[m]), name="cheapest")


class RandomModel(RuleBaseline):
    name = "random"

    def __init__(self, models: Sequence[str], seed: int = 0):
        self.models, self.seed = tuple(models), seed

    def decide(self, instance: ReplayInstance, sampling: Sampling) -> tuple[str, str]:
        available = sorted(m for m in instance.row.records if m in self.models)
        rng = random.Random(f"{self.seed}:{instance.task.id}:{sampling.seed}")
        return "answer", rng.choice(available)


class Oracle(RuleBaseline):
    name = "oracle"

    def __init__(self, models: Sequence[str]):
        self.models = tuple(models)

    def decide(self, instance: ReplayInstance, sampling: Sampling) -> tuple[str, str]:
        return "answer", oracle_model(instance.row, self.models)


def oracle_model(row: Row, models: Sequence[str]) -> str:
    """The cheapest model recorded correct on `row`, else the cheapest available one."""
    available = [(rec.cost_usd, m) for m, rec in row.records.items() if m in models]
    correct = [(cost, m) for cost, m in available if row.records[m].correct]
    return min(correct or available)[1]


class Cascade(RuleBaseline):
    def __init__(self, models: Sequence[str], cascades: Mapping[str, Sequence[str]], name: str = "cascade"):
        for key, chain in cascades.items():
            unknown = [m for m in chain if m not in models]
            if not chain or unknown:
                raise ConfigError(f"cascade for {key!r}: needs known models (unknown: {unknown}; known: "
                                  f"{', '.join(models)})")
        self.cascades, self.name = {k: tuple(v) for k, v in cascades.items()}, name
        self.details = {"cascades": {k: list(v) for k, v in self.cascades.items()}}

    def decide(self, instance: ReplayInstance, sampling: Sampling) -> tuple[str, str]:
        row = instance.row
        models = self.cascades.get(row.task_type) or self.cascades.get("*")
        if models is None:
            raise ConfigError(f"cascade has no models for task type {row.task_type!r} and no '*' entry")
        if row.task_type == "mbpp" or len(models) == 1:
            return "answer", models[0]
        asked = instance.consulted  # (model, letter or None) per ask call, in call order
        if len(asked) >= 2 and asked[-1][1] is not None and asked[-1][1] == asked[-2][1]:
            return "answer", asked[-1][0]
        if len(asked) >= len(models) - 1:
            return "answer", models[-1]
        return "ask", models[len(asked)]


class Knn(RuleBaseline):
    def __init__(self, router: KnnRouter, name: str = "knn"):
        self.router, self.name = router, name
        self.details = {"k": router.k, "lam": router.lam}

    def decide(self, instance: ReplayInstance, sampling: Sampling) -> tuple[str, str]:
        return "answer", self.router.choose(instance.task.prompt)


# ---- fitting on the training part ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Outcomes:
    """Rows x models arrays of recorded outcomes: correct (0/1), cost_usd (0 when missing), choice letter code."""

    models: tuple[str, ...]
    correct: np.ndarray
    available: np.ndarray
    cost_usd: np.ndarray
    letter: np.ndarray

    @classmethod
    def of(cls, rows: Sequence[Row], models: Sequence[str]) -> Outcomes:
        shape = (len(rows), len(models))
        correct, available = np.zeros(shape), np.zeros(shape, dtype=bool)
        cost, letter = np.zeros(shape), np.zeros(shape, dtype=np.int8)
        for i, row in enumerate(rows):
            for j, m in enumerate(models):
                rec = row.records.get(m)
                if rec is not None:
                    correct[i, j], available[i, j], cost[i, j] = rec.correct, True, rec.cost_usd
                    choice = extract_choice(rec.response)
                    letter[i, j] = ord(choice) - ord("A") + 1 if choice else 0
        return cls(tuple(models), correct, available, cost, letter)

    def take(self, index: np.ndarray) -> Outcomes:
        return Outcomes(self.models, self.correct[index], self.available[index], self.cost_usd[index],
                        self.letter[index])


def simulate_cascade(o: Outcomes, sequence: Sequence[int]) -> tuple[float, float]:
    """(accuracy, mean cost per row) of the agreement cascade over model indices `sequence` (see `Cascade`)."""
    n = o.correct.shape[0]
    done, solved, cost = np.zeros(n, dtype=bool), np.zeros(n), np.zeros(n)
    previous = None
    for i, m in enumerate(sequence):
        active = ~done
        cost[active] += o.cost_usd[active, m]
        if i == len(sequence) - 1:
            solved[active] = o.correct[active, m]
            break
        if previous is not None:
            agree = active & (o.letter[:, m] == previous) & (o.letter[:, m] > 0)
            solved[agree] = o.correct[agree, m]
            done |= agree
        previous = o.letter[:, m]
    return float(solved.mean()) if n else 0.0, float(cost.mean()) if n else 0.0


def fit_cascades(rows: Sequence[Row], models: Sequence[str], *, budget_share: float = 0.35,
                 max_cheap: int = 3) -> dict[str, tuple[str, ...]]:
    """Per task type, the cascade of up to `max_cheap` cheap models (optionally ending with the reference model,
    the most accurate one) with the best training accuracy at a mean cost <= `budget_share` x the reference's.
    MBPP rows answer with the first model, so only single models are searched for them."""
    from itertools import permutations

    chosen: dict[str, tuple[str, ...]] = {}
    for task_type in sorted({r.task_type for r in rows}):
        o = Outcomes.of([r for r in rows if r.task_type == task_type], models)
        reference = int(np.argmax(o.correct.mean(axis=0)))
        cap = budget_share * float(o.cost_usd[:, reference].mean())
        cheap = [j for j in range(len(models)) if j != reference]
        candidates: list[tuple[int, ...]] = [(j,) for j in range(len(models))]
        if task_type != "mbpp":
            for size in range(1, max_cheap + 1):
                for seq in permutations(cheap, size):
                    candidates += [seq, (*seq, reference)] if size > 1 else [(*seq, reference)]
        best: tuple[float, float, tuple[int, ...]] | None = None
        for seq in candidates:
            accuracy, cost = simulate_cascade(o, seq)
            if cost <= cap and (best is None or (accuracy, -cost) > (best[0], -best[1])):
                best = (accuracy, cost, seq)
        if best is None:  # nothing fits the budget: the cheapest single model
            best = (0.0, 0.0, (int(np.argmin(o.cost_usd.mean(axis=0))),))
        chosen[task_type] = tuple(models[j] for j in best[2])
    return chosen


_WORD = re.compile(r"[a-z0-9]+")


def tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower())


@dataclass(frozen=True)
class KnnRouter:
    """TF-IDF (log-scaled term frequency x smoothed idf, L2-normalized rows) nearest neighbours over training rows.

    Neighbours of the same task type come first (a same-type bonus of 1 to the cosine similarity); the model score
    is mean correctness among the k neighbours that have it recorded minus `lam` x their mean cost in dollars.
    """

    vocab: Mapping[str, int]
    idf: np.ndarray
    matrix: np.ndarray
    task_types: tuple[str, ...]
    outcomes: Outcomes
    k: int = 25
    lam: float = 0.0

    @classmethod
    def fit(cls, rows: Sequence[Row], models: Sequence[str], *, k: int = 25, lam: float = 0.0) -> KnnRouter:
        docs = [tokens(prompt_text(r)) for r in rows]
        df: dict[str, int] = {}
        for doc in docs:
            for word in set(doc):
                df[word] = df.get(word, 0) + 1
        vocab = {w: i for i, w in enumerate(sorted(df))}
        idf = np.array([np.log((1 + len(docs)) / (1 + df[w])) + 1.0 for w in sorted(df)], dtype=np.float32)
        router = cls(vocab, idf, np.zeros((0, len(vocab)), np.float32), tuple(r.task_type for r in rows),
                     Outcomes.of(rows, models), k, lam)
        return router._with_matrix(router.vectors(docs))

    def _with_matrix(self, matrix: np.ndarray) -> KnnRouter:
        return KnnRouter(self.vocab, self.idf, matrix, self.task_types, self.outcomes, self.k, self.lam)

    def with_params(self, *, k: int | None = None, lam: float | None = None) -> KnnRouter:
        return KnnRouter(self.vocab, self.idf, self.matrix, self.task_types, self.outcomes,
                         self.k if k is None else k, self.lam if lam is None else lam)

    def vectors(self, docs: Sequence[Sequence[str]]) -> np.ndarray:
        out = np.zeros((len(docs), len(self.vocab)), dtype=np.float32)
        for i, doc in enumerate(docs):
            for word in doc:
                j = self.vocab.get(word)
                if j is not None:
                    out[i, j] += 1.0
        out = np.log1p(out) * self.idf
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    def neighbours(self, texts: Sequence[str], task_types: Sequence[str]) -> np.ndarray:
        """Indices (len(texts) x k) of the nearest training rows."""
        sims = self.vectors([tokens(t) for t in texts]) @ self.matrix.T
        sims += np.asarray(task_types)[:, None] == np.asarray(self.task_types)[None, :]
        k = min(self.k, self.matrix.shape[0])
        return np.argsort(-sims, axis=1, kind="stable")[:, :k]

    def scores(self, neighbours: np.ndarray) -> np.ndarray:
        """Per query and model: mean correctness - lam x mean cost over the neighbours that have the model."""
        o = self.outcomes
        have = o.available[neighbours]
        count = have.sum(axis=1)
        accuracy = (o.correct[neighbours] * have).sum(axis=1) / np.maximum(count, 1)
        cost = (o.cost_usd[neighbours] * have).sum(axis=1) / np.maximum(count, 1)
        return np.where(count > 0, accuracy - self.lam * cost, -np.inf)

    def choose(self, prompt: str) -> str:
        task_type = prompt.split("\n", 1)[0].removeprefix("Task: ").strip()
        best = int(np.argmax(self.scores(self.neighbours([prompt], [task_type]))[0]))
        return self.outcomes.models[best]


def prompt_text(row: Row) -> str:
    """What the knn router reads of a row: the task prompt the orchestrator sees (`RouterBench.task`)."""
    return f"Task: {row.task_type}\n{row.question}"


KNN_KS = (10, 25, 50)
KNN_LAMBDAS = (0.0, 3.0, 10.0, 30.0, 100.0, 300.0, 1000.0)


def fit_knn(rows: Sequence[Row], models: Sequence[str], *, lam: float | None = None, k: int | None = None,
            budget_share: float = 0.35, seed: int = 0) -> KnnRouter:
    """A router fit on `rows`; k and lambda not given are picked by 2-fold cross-validation on `rows`: the best
    held-out accuracy at a mean cost <= `budget_share` x the most accurate single model's (lower cost breaks ties)."""
    if lam is None or k is None:
        k, lam = _cross_validate(rows, models, [k] if k else KNN_KS, [lam] if lam is not None else KNN_LAMBDAS,
                                 budget_share, seed)
    return KnnRouter.fit(rows, models, k=k, lam=lam)


def _cross_validate(rows: Sequence[Row], models: Sequence[str], ks: Sequence[int], lambdas: Sequence[float],
                    budget_share: float, seed: int) -> tuple[int, float]:
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    folds = [order[: len(order) // 2], order[len(order) // 2:]]
    totals: dict[tuple[int, float], list[float]] = {}
    reference_cost = []
    for held, fit in ((folds[0], folds[1]), (folds[1], folds[0])):
        router = KnnRouter.fit([rows[i] for i in fit], models, k=max(ks))
        held_out = Outcomes.of([rows[i] for i in held], models)
        reference = int(np.argmax(held_out.correct.mean(axis=0)))
        reference_cost.append(float(held_out.cost_usd[:, reference].mean()))
        nearest = router.neighbours([prompt_text(rows[i]) for i in held], [rows[i].task_type for i in held])
        picks = np.arange(len(held))
        for k in ks:
            for lam in lambdas:
                choice = np.argmax(router.with_params(k=k, lam=lam).scores(nearest[:, :k]), axis=1)
                acc = float(held_out.correct[picks, choice].mean())
                cost = float(held_out.cost_usd[picks, choice].mean())
                totals.setdefault((k, lam), []).extend([acc, cost])
    cap = budget_share * float(np.mean(reference_cost))
    scored = [(float(np.mean(v[0::2])), -float(np.mean(v[1::2])), key) for key, v in totals.items()]
    within = [s for s in scored if -s[1] <= cap] or [max(scored, key=lambda s: s[1])]
    return max(within)[2]
