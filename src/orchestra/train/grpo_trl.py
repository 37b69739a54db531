"""GRPO on TRL's GRPOTrainer, driven by orchestra's multi-turn rollouts and the paper's reward.

The boundary: TRL owns the optimizer side (policy-gradient loss with asymmetric clipping, KL to the reference
policy, LoRA through peft, accelerate/DeepSpeed for scale, checkpoints with optimizer, scheduler, RNG and data
position); orchestra owns rollouts (`orchestra.train.rollout`: the episode loop, token-exact sequences, env masks),
rewards and filters. They meet in `rollout_func`, which TRL calls with a batch of prompts (each task id repeated
`group_size` times, consecutively) and which returns prompt ids, completion ids, logprobs, the env mask and the
reward of every rollout. Another engine (e.g. verl) would plug in at the same boundary: it needs only
`collect_groups` and `to_sequence`.

Settings map one to one: group_size -> num_generations; clip_low/clip_high -> epsilon/epsilon_high; kl_coef ->
beta; loss aggregation "dapo" (token mean over the batch's model-written tokens); rewards scaled per group.

Multi-GPU: the same config runs under `accelerate launch -m orchestra.cli train grpo --config ...` (DeepSpeed via
an accelerate config). On GPUs, switch `model` to the larger policy and raise the step counts; vLLM generation can
replace `LocalBackend` by serving the policy behind an OpenAI-compatible endpoint, provided the server returns token
ids (vLLM's `return_tokens_as_token_ids`), since training needs the exact ids.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import Any

from orchestra.backends.base import Sampling
from orchestra.envs.routerbench.env import compact_prompt
from orchestra.preferences import Limits
from orchestra.rollout.batch import EpisodeSettings
from orchestra.rollout.guard import plain
from orchestra.train.config import GRPOConfig
from orchestra.train.data import Example, rebalance, sample_examples
from orchestra.train.export import OrchestratorMeta, save_orchestrator
from orchestra.train.metrics import MetricsLogger
from orchestra.train.rollout import ScoredGroup, collect_groups, to_sequence
from orchestra.train.sft import collect_demonstrations, load_env, load_policy_model, lora_config

StepCallback = Callable[[int, int, dict[str, float]], None]


@dataclass(frozen=True)
class GRPOResult:
    output_dir: Path
    steps: int
    history: list[dict[str, float]]


def rollout_stats(groups: list[ScoredGroup]) -> dict[str, float]:
    """Step metrics: mean paper reward, accuracy, $/episode, format errors, kept groups, call shares."""
    results = [r for g in groups for r in g.results]
    calls: Counter[str] = Counter()
    for r in results:
        calls.update(r.trajectory.tool_counts())
    total_calls = sum(calls.values()) or 1
    stats = {
        "reward": fmean(x for g in groups for x in g.raw_rewards),
        "accuracy": fmean(float(r.outcome.solved) for r in results),
        "cost_usd": fmean(r.trajectory.cost_usd for r in results),
        "format_errors": fmean(float(r.trajectory.format_errors) for r in results),
        "kept_groups": fmean(float(any(x is not None for x in g.rewards)) for g in groups),
    }
    stats.update({f"share/{name}": n / total_calls for name, n in calls.most_common(4)})
    return stats


def task_pool(env: Any, config: GRPOConfig) -> list[Example]:
    """The training tasks with their preferences; with `disagreement_share`, rebalanced so that tasks where two
    consulted models disagree (the demonstration policy's trajectories tell which) make up that share of the
    consult tasks. Without it, four in five RouterBench consult tasks are ones where the cheap answers agree: their
    groups teach "do not escalate" and the rare disagreements cannot teach when to."""
    examples = sample_examples(env, config.preferences, config.seed, config.data.max_tasks)
    if config.disagreement_share is None:
        return examples
    demos = asyncio.run(collect_demonstrations(env, examples))
    return [e for e, _ in rebalance(demos, config.disagreement_share, len(examples), config.seed)]


def train_grpo(config: GRPOConfig, *, on_step: StepCallback | None = None, backend: Any | None = None) -> GRPOResult:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    # A dropped rollout or group has reward None by design (see orchestra.train.rollout); TRL warns about each one.
    logging.getLogger("trl.trainer.grpo_trainer").setLevel(logging.ERROR)
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOConfig as TRLConfig
    from trl import GRPOTrainer

    env = load_env(config.data, "train")
    examples = task_pool(env, config)
    by_id = {e.task.id: e for e in examples}
    backend = backend or load_policy_model(config.model, seed=config.seed)
    settings = EpisodeSettings(
        limits=Limits(max_turns=config.max_turns), build_prompt=compact_prompt, render_observation=plain,
        sampling=Sampling(temperature=config.temperature, max_tokens=config.max_tokens_per_turn),
    )
    out = Path(config.output_dir)
    history: list[dict[str, float]] = []
    checkpoints = sorted((out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    resume_step = int(checkpoints[-1].name.split("-")[-1]) if checkpoints else 0
    # Steps after the checkpoint are trained (and logged) again; a fresh start (0) drops an older run's lines.
    metrics = MetricsLogger(out / "metrics.jsonl", resume_after_step=resume_step)

    clock: list[float] = []

    def rollout_func(prompts: list[str], trainer: Any) -> dict[str, list[Any]]:
        size = config.group_size
        ids = [p if isinstance(p, str) else json.dumps(p) for p in prompts]
        if len(ids) % size or any(ids[i] != ids[i - i % size] for i in range(len(ids))):
            raise ValueError("rollout_func expects each task repeated group_size times, consecutively")
        chosen = [by_id[i] for i in ids[::size]]
        backend.lm = trainer.model  # generate with the current policy (LoRA layers included)
        if hasattr(backend, "reseed"):  # rollouts of step k depend only on (seed, k): a resumed run repeats them
            backend.reseed(config.seed * 1_000_003 + trainer.state.global_step)
        was_training = trainer.model.training
        trainer.model.eval()
        started = time.perf_counter()
        try:
            groups = asyncio.run(collect_groups(
                env, [e.task for e in chosen], [e.preferences for e in chosen], backend, settings,
                group_size=size, tool_names=list(env.models), min_group_std=config.min_group_std,
            ))
        finally:
            trainer.model.train(was_training)
        stats = rollout_stats(groups)
        stats["rollout_s"] = time.perf_counter() - started
        if clock:  # the previous step's rollouts + optimizer step, measured from its rollout start
            stats["previous_step_s"] = started - clock[-1]
        clock.append(started)
        history.append(stats)
        step = trainer.state.global_step + 1  # the optimizer step these rollouts feed (counts on after a resume)
        metrics.log(step, stats)
        if on_step is not None:
            on_step(step, config.steps, stats)
        sequences = [to_sequence(r) for g in groups for r in g.results]
        return {
            "prompt_ids": [list(s.prompt_ids) for s in sequences],
            "completion_ids": [list(s.completion_ids) for s in sequences],
            "logprobs": [list(s.logprobs) for s in sequences],
            "env_mask": [list(s.env_mask) for s in sequences],
            "orchestra_reward": [x for g in groups for x in g.rewards],
        }

    def orchestra_reward(prompts: list[Any], completions: list[Any], orchestra_reward: list[float | None],
                         **_: Any) -> list[float | None]:
        return orchestra_reward

    rollouts_per_step = config.group_size * config.prompts_per_step
    args = TRLConfig(
        output_dir=str(out / "checkpoints"),
        max_steps=config.steps,
        per_device_train_batch_size=rollouts_per_step // config.gradient_accumulation_steps,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        gradient_checkpointing=config.gradient_checkpointing,  # TRL turns it on by default
        num_generations=config.group_size,
        learning_rate=config.learning_rate,
        epsilon=config.clip_low,
        epsilon_high=config.clip_high,
        beta=config.kl_coef,
        loss_type="dapo",
        scale_rewards="group",
        temperature=config.temperature,
        max_completion_length=config.max_turns * (config.max_tokens_per_turn + 64),
        logging_steps=1,
        save_steps=config.checkpoint.every_steps,
        save_total_limit=config.checkpoint.keep,
        report_to=["tensorboard"] if config.log_tensorboard else [],
        use_cpu=not _has_cuda(),
        bf16=False,
        seed=config.seed,
        data_seed=config.seed,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    peft_config = None if config.lora.rank == 0 else lora_config(config.lora, backend.lm.config.num_hidden_layers)

    trainer = GRPOTrainer(
        model=backend.lm, reward_funcs=[orchestra_reward], args=args,
        train_dataset=Dataset.from_list([{"prompt": e.task.id} for e in examples]),
        processing_class=backend.tokenizer, peft_config=peft_config, rollout_func=rollout_func,
    )
    trainer.remove_callback(PrinterCallback)  # per-step dicts stay out of stdout; metrics go to metrics.jsonl
    trainer.train(resume_from_checkpoint=str(checkpoints[-1]) if checkpoints else None)
    metrics.close()
    trainer.model.eval()
    meta = OrchestratorMeta(prompt="routerbench-compact", observation="plain", render_tools=False,
                            max_tokens=config.max_tokens_per_turn, max_turns=config.max_turns, trained_by="sft+grpo")
    save_orchestrator(trainer.model, backend.tokenizer, out / "orchestrator", meta)
    return GRPOResult(out / "orchestrator", trainer.state.global_step, history)


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()
