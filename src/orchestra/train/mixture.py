"""The training mixture: environments loaded through the registry, their shares, and their demonstrations.

`load_mixture` loads every environment of a config's `envs` list (`orchestra.envs.registry`) before any model is
loaded, so bad data (an unknown name, a τ² folder without tasks, a missing CSV) fails in one line first. `shares`
splits a count over the environments by weight (largest remainders, so the counts sum exactly).

Demonstration sources (`collect_demonstrations`):
- `env`: the environment's own (`Suite.demonstrate`: RouterBench's fitted consult-and-compare policy, τ² golden
  actions), then `Suite.choose` (its balance, e.g. RouterBench's disagreement share);
- `teacher`: any `ChatBackend` (e.g. a strong model at an OpenAI-compatible endpoint) run through the episode loop
  with the environment's own compact prompt and observation format, `attempts` episodes per task; only solved
  episodes are kept (the paper's way of making SFT data). The endpoint is checked before anything else runs.
  A run-wide `Budget` (`run_budget_usd`) caps what every teacher episode together may spend; an episode the cap
  stopped is never kept, not even with `keep_unsolved` (it shows the cap, not the teacher).
A demonstration's messages are exactly what the student will read, whatever produced them: the same prompt builder
and observation renderer run at training and at evaluation.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from orchestra.backends.base import ChatBackend, Sampling
from orchestra.config import ModelEndpoint
from orchestra.envs.base import Demonstration, Example, Suite
from orchestra.errors import ConfigError
from orchestra.preferences import Limits
from orchestra.rollout.batch import EpisodeSettings, run_many
from orchestra.rollout.budget import Budget
from orchestra.task import InstancePolicy
from orchestra.types import Termination


@dataclass(frozen=True)
class TrainingEnv:
    suite: Suite
    weight: float

    def settings(self, *, max_turns: int | None = None, turn_tokens: int | None = None,
                 temperature: float = 0.0) -> EpisodeSettings:
        """How this environment's episodes run for a trained orchestrator (its prompt, observation format and
        limits, unless overridden)."""
        return EpisodeSettings(
            limits=Limits(max_turns=max_turns or self.suite.max_turns), build_prompt=self.suite.prompt,
            render_observation=self.suite.observation,
            sampling=Sampling(temperature=temperature, max_tokens=turn_tokens or self.suite.turn_tokens))


def load_mixture(entries: Sequence[object]) -> list[TrainingEnv]:
    """Every environment of `entries` (`EnvEntry` records of a training config), loaded."""
    from orchestra.envs.registry import load_suite

    out = []
    for i, entry in enumerate(entries):
        try:
            suite = load_suite(entry.config)  # type: ignore[attr-defined]
        except ConfigError as exc:
            raise ConfigError(f"envs.{i}: {exc}") from None
        out.append(TrainingEnv(suite, float(entry.weight)))  # type: ignore[attr-defined]
    return out


def shares(total: int, weights: Sequence[float]) -> list[int]:
    """`total` split in proportion to `weights` (largest remainders; the parts sum to `total`)."""
    whole = sum(weights)
    if whole <= 0:
        raise ConfigError("envs: the weights must sum to a positive number")
    exact = [total * w / whole for w in weights]
    counts = [int(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (counts[i] - exact[i], i))
    for i in order[: total - sum(counts)]:
        counts[i] += 1
    return counts


def run_budget(limit_usd: float | None, processes: int = 1) -> Budget | None:
    """The run-wide budget of a training command (None: no cap). Each of `processes` gets an equal share, so the
    processes together stay under `limit_usd` without talking to each other."""
    if limit_usd is None:
        return None
    return Budget(limit_usd / processes)


def book_earlier_spend(budget: Budget, path: Path) -> None:
    """Book what this process's earlier runs spent (a resumed run continues under the same cap)."""
    try:
        earlier = json.loads(path.read_text())
        spent, disputed = float(earlier["spent_usd"]), float(earlier["disputed_usd"])
    except FileNotFoundError:
        return
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: unreadable ({exc}); it records what the run has spent, so a resume cannot "
                          "keep the run_budget_usd cap without it") from None
    held = budget.reserve(min(spent, budget.limit_usd))
    budget.settle(held, spent + disputed)  # beyond the reservation: disputed again, as it was


def save_spend(budget: Budget, path: Path) -> None:
    """Write what the run has spent so far (atomically: a kill leaves the previous figure)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps({"limit_usd": budget.limit_usd, "spent_usd": budget.spent_usd,
                                "disputed_usd": budget.disputed_usd}))
    os.replace(temp, path)


async def collect_demonstrations(mixture: Sequence[TrainingEnv], n: int, seed: int, *, source: str = "env",
                                 teacher: ChatBackend | InstancePolicy | None = None, attempts: int = 1,
                                 keep_unsolved: bool = False, budget: Budget | None = None) -> list[Demonstration]:
    """`n` demonstrations over the mixture, each environment contributing its share (see the module docstring).
    `budget` is shared by every teacher episode."""
    out: list[Demonstration] = []
    for env, count in zip(mixture, shares(n, [e.weight for e in mixture]), strict=True):
        if count == 0:
            continue
        examples = env.suite.training_examples(seed)
        if source == "teacher":
            if teacher is None:
                raise ConfigError("demonstrations.teacher: required when source is teacher")
            demos = await teacher_demonstrations(env, examples, teacher, attempts, keep_unsolved=keep_unsolved,
                                                 budget=budget)
        elif env.suite.demonstrate is None:
            raise ConfigError(f"{env.suite.name}: has no demonstration source of its own; use "
                              "demonstrations.source: teacher")
        else:
            demos = await env.suite.demonstrate(examples)
        if not demos:
            spent = f"; the run budget is spent (${budget.spent_usd:.6f} of ${budget.limit_usd:.6f})" if (
                budget is not None and budget.remaining_usd < budget.limit_usd) else ""
            raise ConfigError(f"{env.suite.name}: no demonstration could be made (no solved episode{spent})")
        out += env.suite.choose(demos, count, seed)
    return out


async def teacher_demonstrations(env: TrainingEnv, examples: Sequence[Example],
                                 teacher: ChatBackend | InstancePolicy, attempts: int = 1, concurrency: int = 8,
                                 keep_unsolved: bool = False, budget: Budget | None = None) -> list[Demonstration]:
    """The solved episodes (all of them with `keep_unsolved`, less those the budget stopped) of `teacher` on
    `examples`, each tried `attempts` times with sampling seeds 0.. ; every episode draws on `budget`."""
    out: list[Demonstration] = []
    for attempt in range(attempts):
        settings = env.settings(temperature=0.0 if attempts == 1 else 0.7)
        settings = EpisodeSettings(limits=settings.limits, build_prompt=settings.build_prompt,
                                   render_observation=settings.render_observation,
                                   sampling=Sampling(temperature=settings.sampling.temperature, seed=attempt,
                                                     max_tokens=max(settings.sampling.max_tokens, 512)))
        results = await run_many(env.suite.training_env, [e.task for e in examples], teacher, settings,
                                 concurrency=concurrency, preferences=[e.preferences for e in examples],
                                 budget=budget)
        out += [(e, r.trajectory) for e, r in zip(examples, results, strict=True)
                if r.outcome.solved or (keep_unsolved and r.trajectory.termination != Termination.BUDGET)]
    return out


def teacher_backend(endpoint: ModelEndpoint) -> ChatBackend:
    """The teacher's backend, after checking an HTTP endpoint answers (a down endpoint is one ConfigError line)."""
    from orchestra.backends.pricing import PriceTable
    from orchestra.pool import make_backend

    if endpoint.kind == "openai":
        check_endpoint(endpoint.base_url or "")
    try:
        return make_backend(endpoint, PriceTable.default())
    except ConfigError as exc:
        raise ConfigError(f"demonstrations.teacher: {exc}") from None


def check_endpoint(base_url: str, timeout_s: float = 5.0) -> None:
    """GET `<base_url>/models`; any answer counts as up (a 401 still means a server is there)."""
    import httpx2

    try:
        httpx2.get(base_url.rstrip("/") + "/models", timeout=timeout_s)
    except Exception as exc:  # noqa: BLE001 - any transport failure means the endpoint is not usable
        raise ConfigError(f"demonstrations.teacher: {base_url} is not reachable ({type(exc).__name__}: {exc}); "
                          "start the server or fix base_url") from None

