"""`EvalConfig`: the config tree of `orchestra eval` (built from its flags, or from a YAML file plus overrides).

It is validated before anything is loaded (a bad value is one line naming the flag's field), and its dump is part of
each run's identity next to what the runner adds itself (see `orchestra.evaluate.run`).
"""

from __future__ import annotations

from typing import Any

import pydantic

from orchestra.config import Strict


class EvalConfig(Strict):
    """One evaluation: an environment, the orchestrators to run on it, and the limits they run under."""

    env: dict[str, Any] = pydantic.Field(description="The environment's config (a mapping with `name`).")
    orchestrators: list[str] = pydantic.Field(min_length=1, description="Orchestrator specs (see `orchestra eval`).")
    limit: int | None = pydantic.Field(None, ge=1, description="Evaluate the first N tasks only.")
    trials: int = pydantic.Field(1, ge=1, description="Trials per task (pass^k when > 1).")
    concurrency: int = pydantic.Field(8, ge=1, description="Episodes in flight.")
    seed: int = pydantic.Field(0, description="Seed of random baselines and sampling.")
    prices: str | None = pydantic.Field(None, description="Price overrides YAML.")
    prefer_avoid: list[str] = pydantic.Field(default_factory=list, description="Models to avoid.")
    preferences: str | None = pydantic.Field(None, description="Preferences YAML.")
    pool: str | None = pydantic.Field(None, description="Pool YAML.")
    max_turns: int = pydantic.Field(10, ge=1, description="Turn cap per episode.")
    budget_usd: float | None = pydantic.Field(None, gt=0, description="Dollar cap per episode.")
    run_budget_usd: float | None = pydantic.Field(None, gt=0, description="Dollar cap shared by every episode.")
    temperature: float = pydantic.Field(0.0, ge=0, description="Orchestrator sampling temperature.")
    max_tokens: int = pydantic.Field(512, ge=1, description="Orchestrator max tokens per turn.")

    @pydantic.model_validator(mode="after")
    def _check(self) -> EvalConfig:
        if self.prefer_avoid and self.preferences:
            raise ValueError("give prefer_avoid or preferences, not both")
        return self
