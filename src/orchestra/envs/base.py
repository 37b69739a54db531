"""The environment contract: what one environment folder gives the layers above it.

An environment is one folder `envs/<name>/` whose `__init__` exports two names and imports nothing heavy:
- `Config`: a pydantic model of its settings, with `name: Literal["<name>"]` and every field documented;
- `load(config) -> Suite`: everything training, evaluation, the demo and serving need from it.
`orchestra.envs.registry` maps names to folders; the layers above name environments only through it and read only
the records below, so adding an environment (or a synthesized domain, which the `tau` folder loads unchanged) touches
one folder.

A `Suite` holds data and functions, not behaviour to override:
- the `Environment` itself (tasks, `start(task) -> Instance`, grading) and the tasks of the configured part;
- `identity`: what identifies the data (paths and content digests), part of every run's config hash;
- how a trained small orchestrator reads it: a compact prompt builder and an observation renderer, each with the
  name saved in the checkpoint so evaluation rebuilds the same prompt;
- `reward_tools`: the tool names whose call counts are features of the paper's reward;
- `baselines`: spec heads (`always`, `cascade`, ...) mapped to factories of per-instance policies;
- training: `examples(seed, limit)` (tasks with their sampled preferences), `demonstrate(examples)` (the
  environment's own demonstration source: golden actions, a fitted policy; None when it has none) and
  `select(demonstrations, n, seed)` (which demonstrations to train on: a curriculum or a balance).
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from orchestra.backends.base import ChatBackend
from orchestra.preferences import Preferences
from orchestra.rollout.episode import ObservationRenderer, PromptBuilder
from orchestra.task import Environment, Instance, InstancePolicy, Task
from orchestra.types import Outcome, Trajectory


@dataclass(frozen=True, slots=True)
class Example:
    """One training task with the preference it is trained under and the tools that preference rules out.

    The task itself carries what the pool looks like for it (e.g. offered models and their prices). `family` names
    the preference family ("default", "avoid", "corner", "cheapest", "accuracy"); a demonstration policy may read it
    to set its cost budget."""

    task: Task
    preferences: Preferences
    avoided: frozenset[str] = frozenset()
    family: str = "default"


Demonstration = tuple[Example, Trajectory]


BaselineFactory = Callable[[str], ChatBackend | InstancePolicy]
"""Builds a baseline from the text after the spec head (`cascade:a,b` -> "a,b"); raises ConfigError on bad text."""


@dataclass(frozen=True)
class Suite:
    """Everything the layers above need from one configured environment (see the module docstring)."""

    env: Environment
    tasks: Sequence[Task]
    identity: Mapping[str, Any]
    prompt: PromptBuilder
    prompt_name: str
    observation: ObservationRenderer
    observation_name: str
    calls: str = "hermes"
    """The tool-call dialect an orchestrator trained on this environment writes (`orchestra.toolcalls`)."""
    reward_tools: Sequence[str] = ()
    brings_models: bool = False
    """True when the environment's own tools are the models (pool tools are then not added)."""
    models: Sequence[str] = ()
    """Models an "avoid" preference may name (replay environments)."""
    baselines: Mapping[str, BaselineFactory] = field(default_factory=dict)
    preference_presets: Mapping[str, Preferences] = field(default_factory=dict)
    """Named preferences as the environment trains them (`default`, `avoid-claude`, ...), so an evaluation can ask
    for exactly the instruction a trained orchestrator learned."""
    examples: Callable[[int, int | None], list[Example]] | None = None
    demonstrate: Callable[[Sequence[Example]], Awaitable[list[Demonstration]]] | None = None
    select: Callable[[Sequence[Demonstration], int, int], list[Demonstration]] | None = None
    check: Callable[[], tuple[str, bool]] | None = None
    """A data check (`orchestra env check`): its report and whether the data is usable."""
    train_env: Environment | None = None
    """The environment training examples come from and rollouts run in, when not `env` (e.g. the train part of a
    split while `env` serves the dev part)."""
    max_turns: int = 10
    """The turn cap a trained orchestrator runs under in this environment."""
    turn_tokens: int = 256
    """Generated tokens per turn a trained orchestrator gets in this environment."""

    @property
    def name(self) -> str:
        return self.env.name

    @property
    def training_env(self) -> Environment:
        return self.train_env if self.train_env is not None else self.env

    def training_examples(self, seed: int, limit: int | None = None) -> list[Example]:
        """`examples(seed, limit)`, or every task under the default preference when the suite has no sampler."""
        if self.examples is not None:
            return self.examples(seed, limit)
        return default_examples(self.tasks, seed, limit)

    def choose(self, demonstrations: Sequence[Demonstration], n: int, seed: int) -> list[Demonstration]:
        """`select(...)`, or `n` demonstrations drawn at random (repeating only when there are fewer than n)."""
        if self.select is not None:
            return self.select(demonstrations, n, seed)
        rng = random.Random(seed)
        picked = draw(rng, demonstrations, n)
        rng.shuffle(picked)
        return picked


def default_examples(tasks: Sequence[Task], seed: int, limit: int | None = None,
                     preferences: Preferences | None = None) -> list[Example]:
    """Every task (or `limit` of them after a seeded shuffle) under one preference (default: outcome only)."""
    chosen = list(tasks)
    random.Random(seed).shuffle(chosen)
    prefs = preferences or Preferences(outcome=1.0)
    return [Example(t, prefs) for t in chosen[:limit]]


def draw(rng: random.Random, items: Sequence[Demonstration], k: int) -> list[Demonstration]:
    """`k` items: a sample without repetition when there are enough, else all of them plus random repeats."""
    if k <= 0 or not items:
        return []
    if k <= len(items):
        return rng.sample(list(items), k)
    return list(items) + [rng.choice(items) for _ in range(k - len(items))]


__all__ = ["BaselineFactory", "Demonstration", "Environment", "Example", "Instance", "InstancePolicy", "Outcome",
           "Suite", "default_examples", "draw"]
