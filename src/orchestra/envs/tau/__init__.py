"""τ²-format customer-service domains: domain tools over a database, graded by golden actions.

Domains: retail, telecom, mock, and any folder in τ² format (synthesized ones included). Entry point: `load(Config) -> Suite` (see `orchestra.envs.base`); nothing heavy is imported here.

Solo mode (the customer's whole request is in the task prompt). Demonstrations: the golden actions rendered as the
orchestrator's own transcript (`orchestra.envs.tau.demonstrations`). Reward features: one call count per domain tool.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pydantic

from orchestra.config import Strict
from orchestra.envs.base import Suite
from orchestra.errors import ConfigError

__all__ = ["Config", "load"]


class Config(Strict):
    """A τ²-format domain folder in solo mode."""

    name: Literal["tau"] = "tau"
    domain: str | None = pydantic.Field(
        None, description="Domain name: picks the hand-written tools (retail, telecom, mock) and the default folder "
                          "shared_data/tau2/<domain> (default: the folder's name, else retail). A folder with "
                          "tools.json (a synthesized domain) brings its own tools.")
    path: str | None = pydantic.Field(None, description="The domain folder (default: shared data tau2/<domain>).")
    part: str | None = pydantic.Field(None, description="A split of split_tasks.json (train, test, ...) or all.")
    max_tasks: int | None = pydantic.Field(None, ge=1, description="Use at most this many tasks (file order).")
    max_actions: int | None = pydantic.Field(
        None, ge=1, description="Leave out tasks whose golden actions make more agent calls than this (keeps "
                                "episodes short for small models).")
    max_observation_chars: int = pydantic.Field(
        1200, ge=64, description="A tool output longer than this is cut (with a marker) before the model reads it.")
    max_turns: int = pydantic.Field(12, ge=1, description="Turn cap of a trained orchestrator here.")
    turn_tokens: int = pydantic.Field(160, ge=16, description="Generated tokens per turn of a trained orchestrator.")
    cost_weight: float = pydantic.Field(0.0, ge=0, le=1, description="Training: p_cost of the default preference.")


def load(config: Config) -> Suite:
    from orchestra.envs.base import default_examples
    from orchestra.envs.registry import file_digest
    from orchestra.envs.tau.demonstrations import golden_demonstrations
    from orchestra.envs.tau.env import TauEnvironment
    from orchestra.envs.tau.prompt import capped, compact_tau_prompt
    from orchestra.preferences import Limits, Preferences
    from orchestra.rollout.batch import EpisodeSettings

    path = Path(config.path) if config.path else None
    if path is not None and not path.is_dir():
        raise ConfigError(f"tau path {path}: not a folder (a τ² domain folder holds db.json, policy.md and "
                          "tasks.json)")
    env = TauEnvironment(config.domain or (path.name if path is not None else "retail"), path=path)
    part = config.part or "all"
    tasks = list(env.tasks(None if part == "all" else part))
    if config.max_actions is not None:
        tasks = [t for t in tasks if sum(a.requestor == "assistant" for a in env.spec(t).actions) <= config.max_actions]
    tasks = tasks[: config.max_tasks]
    observation = capped(config.max_observation_chars)
    identity = {"env": "tau", "domain": env.domain.name, "data": str(env.path), "data_sha256": file_digest(env.path),
                "part": part, "mode": env.mode, "max_observation_chars": config.max_observation_chars,
                "max_actions": config.max_actions, "max_tasks": config.max_tasks}
    tool_names = sorted({*env.domain.agent_functions(), *env.domain.user_functions()})
    prefs = Preferences(outcome=1.0, cost=config.cost_weight)
    settings = EpisodeSettings(limits=Limits(max_turns=config.max_turns), build_prompt=compact_tau_prompt,
                               render_observation=observation)

    def examples(seed: int, limit: int | None) -> list[Any]:
        return default_examples(tasks, seed, limit, prefs)

    async def demonstrate(chosen: Any) -> list[Any]:
        return await golden_demonstrations(env, chosen, settings)

    def check() -> tuple[str, bool]:
        report = env.check()
        return report.render(), report.ok

    return Suite(
        env=env, check=check, tasks=tasks, identity=identity, prompt=compact_tau_prompt, prompt_name="tau/compact",
        observation=observation, observation_name=f"capped:{config.max_observation_chars}",
        reward_tools=tool_names, examples=examples, demonstrate=demonstrate,
        max_turns=config.max_turns, turn_tokens=config.turn_tokens,
    )

