"""Question answering over JSONL files in the HLE or FRAMES format (graders: exact, numeric, choice, judge).

Evaluation sets: HLE carries a canary and is never trained on. Entry point: `load(Config) -> Suite`; nothing heavy is imported here.

Tasks bring only `answer(text)`; the pool brings search, code and expert models, so the suite's prompt is the
default one with the full tool table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import pydantic

from orchestra.config import Strict
from orchestra.envs.base import Suite

__all__ = ["Config", "load"]


class Config(Strict):
    """A JSONL file of questions with gold answers."""

    name: Literal["qa"] = "qa"
    data: str | None = pydantic.Field(None, description="JSONL file (default: shared data frames/frames.jsonl).")
    format: Literal["auto", "hle", "frames"] = pydantic.Field("auto", description="Record format.")
    part: str | None = pydantic.Field(None, description="all, dev, test (a fixed hash partition) or START:STOP.")
    dev_fraction: float = pydantic.Field(0.2, gt=0, le=1, description="Share of the items in the dev part.")
    max_tasks: int | None = pydantic.Field(None, ge=1, description="Use at most this many tasks.")


def load(config: Config) -> Suite:
    from orchestra.envs.qa.env import QAEnvironment
    from orchestra.envs.registry import file_digest
    from orchestra.paths import shared_data
    from orchestra.rollout.guard import wrap_untrusted
    from orchestra.rollout.prompt import default_prompt

    path = Path(config.data) if config.data else shared_data() / "frames" / "frames.jsonl"
    env = QAEnvironment(path, format=config.format, dev_fraction=config.dev_fraction, limit=config.max_tasks)
    part = config.part or "all"
    identity = {"env": "qa", "data": str(path), "data_sha256": file_digest(path), "part": part,
                "dev_fraction": config.dev_fraction}
    return Suite(env=env, tasks=env.tasks(part), identity=identity, prompt=default_prompt, prompt_name="default",
                 observation=wrap_untrusted, observation_name="untrusted", reward_tools=("answer",))
