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

Environments: any mixture (`envs`). Each task of the dataset is `<env index>:<task id>`; `rollout_func` runs each
environment's groups with its own prompt, observation format, limits and reward features (`Suite.reward_tools`),
all concurrently so a local policy batches across them.

Several processes: the same config runs under `accelerate launch -m orchestra train grpo --config ...` (DDP, or
DeepSpeed through an accelerate config). `prompts_per_step` tasks are split over the processes, whole groups each;
every process runs its own groups' rollouts (seeded per step and process) with the policy unwrapped from its
wrapper (`generating_policy`; ZeRO-3 weights gathered while generating); step stats are averaged over processes and
logged by the main process, which alone writes the orchestrator folder. With `use_vllm`, rollouts are sampled on
TRL's vLLM server (`orchestra.backends.trl_vllm`) from exact prompt ids, and TRL pushes the weights to the server
after each optimizer step; the training processes then only score and update.

Run-wide budget (`run_budget_usd`): one `Budget` shared by every rollout of the run (each process holds an equal
share). Paid calls (tools that charge, a priced policy) reserve on it; once it is spent they are refused and those
rollouts end with termination budget, while the free local policy keeps sampling. What was spent is written after
every step (`run_budget.<process>.json`) and booked again on resume, so a killed and resumed run stays under one cap
(less only what the step in flight at the kill spent). A rollout the budget stopped before the policy's first
reply has no tokens to train on: the step fails with `BudgetExceeded`, naming the cap.

Rollout sampling RNG (RELIABILITY R6): before each step's rollouts the policy's sampling seed is reset from
(seed, step, process), and each rollout's draws come from its own generator seeded from it, so a run killed after
checkpoint k and resumed samples the same completions at step k + 1 as an uninterrupted run, given the weights TRL's
checkpoint restores (tests/test_checkpoint.py). Limit: equality holds only as far as batched generation is
deterministic on the device; the micro-batcher may group a step's requests differently when their arrival order
changes, and a row's floating-point result can depend on its batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from statistics import fmean
from typing import Any

import torch

from orchestra.envs.base import Example
from orchestra.errors import BudgetExceeded, ConfigError
from orchestra.rollout.budget import Budget
from orchestra.train.config import GRPOConfig
from orchestra.train.export import save_orchestrator
from orchestra.train.metrics import MetricsLogger
from orchestra.train.mixture import (
    TrainingEnv,
    book_earlier_spend,
    load_mixture,
    run_budget,
    save_spend,
    shares,
)
from orchestra.train.rollout import ScoredGroup, collect_groups, to_sequence
from orchestra.train.sft import load_policy_model, lora_config, resolve_device, speak, trained_meta
from orchestra.types import Termination

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
        "budget_stopped": fmean(float(r.trajectory.termination == Termination.BUDGET) for r in results),
    }
    stats.update({f"share/{name}": n / total_calls for name, n in calls.most_common(4)})
    return stats


def task_pool(mixture: list[TrainingEnv], config: GRPOConfig) -> list[tuple[int, Example]]:
    """The training tasks with their preferences, as (environment index, example).

    Each environment contributes its weight's share of its examples. With `balance_tasks`, an environment that has
    its own demonstration source picks its tasks the way SFT picks demonstrations (`Suite.choose`): on RouterBench,
    four in five consult tasks are ones where the cheap answers agree, so without the balance their groups teach
    "do not escalate" and the rare disagreements cannot teach when to."""
    pools = []
    for k, env in enumerate(mixture):
        examples = env.suite.training_examples(config.seed)
        if config.balance_tasks and env.suite.select is not None and env.suite.demonstrate is not None:
            demos = asyncio.run(env.suite.demonstrate(examples))
            examples = [e for e, _ in env.suite.choose(demos, len(examples), config.seed)]
        pools.append([(k, e) for e in examples])
    if len(pools) == 1:
        return pools[0]
    total = sum(len(p) for p in pools)
    counts = shares(total, [e.weight for e in mixture])
    return [item for pool, n in zip(pools, counts, strict=True) for item in (pool * (n // max(1, len(pool)) + 1))[:n]]


def train_grpo(config: GRPOConfig, *, on_step: StepCallback | None = None, backend: Any | None = None) -> GRPOResult:
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    # A dropped rollout or group has reward None by design (see orchestra.train.rollout); TRL warns about each one.
    logging.getLogger("trl.trainer.grpo_trainer").setLevel(logging.ERROR)
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback
    from trl import GRPOConfig as TRLConfig
    from trl import GRPOTrainer

    if config.use_vllm:
        _check_vllm_installed()
    mixture = load_mixture(config.envs)
    _check_trl_fields(config.trl, TRLConfig)
    pool = task_pool(mixture, config)
    backend = speak(backend or load_policy_model(config.model, seed=config.seed), mixture, config.model)
    out = Path(config.output_dir)
    checkpoints = sorted((out / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    resume_step = int(checkpoints[-1].name.split("-")[-1]) if checkpoints else 0
    budget = run_budget(config.run_budget_usd, _world_size())
    budget_file = out / f"run_budget.{os.environ.get('RANK', '0')}.json"
    if budget is not None and resume_step:
        book_earlier_spend(budget, budget_file)
    settings = [dataclasses.replace(env.settings(max_turns=config.max_turns, turn_tokens=config.max_tokens_per_turn,
                                                 temperature=config.temperature), budget=budget) for env in mixture]
    # Steps after the checkpoint are trained (and logged) again; a fresh start (0) drops an older run's lines.
    # One writer: under `accelerate launch` the main process logs the stats of all processes' rollouts.
    metrics = MetricsLogger(out / "metrics.jsonl", resume_after_step=resume_step) if _is_main_process() else None
    rollouts = _Rollouts(config, mixture, settings, pool, backend, budget, budget_file, metrics, on_step)

    def orchestra_reward(prompts: list[Any], completions: list[Any], orchestra_reward: list[float | None],
                         **_: Any) -> list[float | None]:
        return orchestra_reward

    args = TRLConfig(**_trl_settings(config, settings, out), **config.trl)
    peft_config = None if config.lora.rank == 0 else lora_config(config.lora, backend.lm.config.num_hidden_layers)
    trainer = GRPOTrainer(
        model=backend.lm, reward_funcs=[orchestra_reward], args=args,
        train_dataset=Dataset.from_list([{"prompt": f"{k}:{e.task.id}"} for k, e in pool]),
        processing_class=backend.tokenizer, peft_config=peft_config, rollout_func=rollouts,
    )
    trainer.remove_callback(PrinterCallback)  # per-step dicts stay out of stdout; metrics go to metrics.jsonl
    trainer.train(resume_from_checkpoint=str(checkpoints[-1]) if checkpoints else None)
    if metrics is not None:
        metrics.close()
    trainer.model.eval()
    meta = trained_meta(mixture, "sft+grpo", max_tokens=config.max_tokens_per_turn, max_turns=config.max_turns)
    if trainer.accelerator.is_main_process:
        save_orchestrator(trainer.model, backend.tokenizer, out / "orchestrator", meta)
    trainer.accelerator.wait_for_everyone()  # every process returns once the orchestrator folder is complete
    return GRPOResult(out / "orchestrator", trainer.state.global_step, rollouts.history)


class _Rollouts:
    """TRL's `rollout_func`: one step's groups through the episode loop, their sequences and rewards.

    It keeps the run's step history, logs each step's stats, books the run budget's spend after every step, and
    reseeds the policy's sampling per (seed, step, process) before the rollouts."""

    def __init__(self, config: GRPOConfig, mixture: list[TrainingEnv], settings: list[Any],
                 pool: list[tuple[int, Example]], backend: Any, budget: Budget | None, budget_file: Path,
                 metrics: MetricsLogger | None, on_step: StepCallback | None):
        self.config, self.mixture, self.settings, self.backend = config, mixture, settings, backend
        self.by_id = {f"{k}:{e.task.id}": (k, e) for k, e in pool}
        self.budget, self.budget_file, self.metrics, self.on_step = budget, budget_file, metrics, on_step
        self.history: list[dict[str, float]] = []
        self.previous_start: float | None = None
        self.sampler: Any = None  # use_vllm: the TRLVLLMBackend, made at the first rollout (it needs the trainer)

    def __call__(self, prompts: list[str], trainer: Any) -> dict[str, list[Any]]:
        config, size = self.config, self.config.group_size
        ids = [p if isinstance(p, str) else json.dumps(p) for p in prompts]
        if len(ids) % size or any(ids[i] != ids[i - i % size] for i in range(len(ids))):
            raise ValueError("rollout_func expects each task repeated group_size times, consecutively")
        chosen = [self.by_id[i] for i in ids[::size]]  # (environment index, example), one per group
        accelerator = trainer.accelerator
        if hasattr(self.backend, "reseed"):  # rollouts of step k depend only on (seed, k, process): a resumed run
            step_seed = config.seed * 1_000_003 + trainer.state.global_step  # repeats them
            self.backend.reseed(step_seed * accelerator.num_processes + accelerator.process_index)
        started = time.perf_counter()
        groups = self._collect(trainer, chosen)
        if self.budget is not None:
            _check_budget_left_tokens(groups, self.budget)
            save_spend(self.budget, self.budget_file)
        stats = merged_stats(accelerator, rollout_stats(groups))
        stats["rollout_s"] = time.perf_counter() - started
        if self.previous_start is not None:  # the previous step's rollouts + optimizer step, from its rollout start
            stats["previous_step_s"] = started - self.previous_start
        self.previous_start = started
        self.history.append(stats)
        step = trainer.state.global_step + 1  # the optimizer step these rollouts feed (counts on after a resume)
        if self.metrics is not None:
            self.metrics.log(step, stats)
        if self.on_step is not None and accelerator.is_main_process:
            self.on_step(step, config.steps, stats)
        sequences = [to_sequence(r) for g in groups for r in g.results]
        return {
            "prompt_ids": [list(s.prompt_ids) for s in sequences],
            "completion_ids": [list(s.completion_ids) for s in sequences],
            "logprobs": [list(s.logprobs) for s in sequences],
            "env_mask": [list(s.env_mask) for s in sequences],
            "orchestra_reward": [x for g in groups for x in g.rewards],
        }

    def _collect(self, trainer: Any, chosen: list[tuple[int, Example]]) -> list[ScoredGroup]:
        config = self.config
        if config.use_vllm:  # the server holds the weights TRL pushed after the last optimizer step
            if self.sampler is None:
                self.sampler = vllm_sampler(trainer, self.backend, config)
            policy, generating = self.sampler, contextlib.nullcontext()
        else:
            policy, generating = self.backend, generating_policy(trainer, self.backend)
        with generating:
            return asyncio.run(_collect(self.mixture, self.settings, chosen, policy, config.group_size,
                                        config.min_group_std))


def _trl_settings(config: GRPOConfig, settings: list[Any], out: Path) -> dict[str, Any]:
    """TRL's GRPOConfig fields that orchestra sets from its own config; `config.trl` may add others, not these."""
    device, dtype = resolve_device(config.model)
    mapped = dict(
        output_dir=str(out / "checkpoints"),
        max_steps=config.steps,
        per_device_train_batch_size=_per_device_rollouts(config, _world_size()),
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
        max_completion_length=max(s.limits.max_turns * (s.sampling.max_tokens + 64) for s in settings),
        logging_steps=1,
        save_steps=config.checkpoint.every_steps,
        save_total_limit=config.checkpoint.keep,
        report_to=["tensorboard"] if config.log_tensorboard else [],
        use_cpu=device == "cpu",
        bf16=dtype == torch.bfloat16,
        seed=config.seed,
        data_seed=config.seed,
        remove_unused_columns=False,
        dataloader_num_workers=0,
        disable_tqdm=True,
        use_vllm=config.use_vllm,
        **vllm_server_settings(config),
    )
    clash = sorted(set(config.trl) & set(mapped))
    if clash:
        raise ConfigError(f"trl.{clash[0]}: set by orchestra from its own config (use the field of GRPOConfig that "
                          "maps to it, e.g. steps, group_size, learning_rate, clip_low, kl_coef)")
    return mapped


@contextlib.contextmanager
def generating_policy(trainer: Any, backend: Any) -> Iterator[Any]:
    """`backend` generating with the trainer's current policy (LoRA layers included), in eval mode.

    The policy is unwrapped from whatever accelerate wrapped it in (DDP; under DeepSpeed ZeRO-3 its sharded
    weights are gathered for the duration, as TRL does for its own generation), so every process samples from the
    full current weights. Training mode and gradient checkpointing are restored afterwards.
    """
    from trl.models.utils import unwrap_model_for_generation

    with unwrap_model_for_generation(trainer.model_wrapped, trainer.accelerator,
                                     gather_deepspeed3_params=trainer.args.ds3_gather_for_generation,
                                     gradient_checkpointing_kwargs=trainer.args.gradient_checkpointing_kwargs
                                     ) as policy:
        backend.lm = policy
        was_training = policy.training
        policy.eval()
        try:
            yield policy
        finally:
            policy.train(was_training)


def vllm_sampler(trainer: Any, backend: Any, config: GRPOConfig) -> Any:
    """The backend that samples this process's rollouts on TRL's vLLM server, rendering and parsing as `backend`.

    The main process reuses the client TRL opened (the one it pushes weights through); the others open their own,
    for generation requests only."""
    from orchestra.backends.trl_vllm import TRLVLLMBackend

    client = getattr(getattr(trainer, "vllm_generation", None), "vllm_client", None)
    if client is None:
        from trl.generation.vllm_client import VLLMClient

        client = VLLMClient(base_url=config.vllm_server_url, connection_timeout=config.vllm_server_timeout_s)
    return TRLVLLMBackend.beside(backend, client)


def vllm_server_settings(config: GRPOConfig) -> dict[str, Any]:
    """TRL's settings for its vLLM server mode (none without `use_vllm`)."""
    if not config.use_vllm:
        return {}
    return {"vllm_mode": "server", "vllm_server_base_url": config.vllm_server_url,
            "vllm_server_timeout": config.vllm_server_timeout_s}


def _check_vllm_installed() -> None:
    from trl.import_utils import is_vllm_available

    if not is_vllm_available():
        raise ConfigError("use_vllm: vLLM is not installed in this environment (`pip install vllm`; it needs CUDA "
                          "GPUs); set use_vllm=false to sample rollouts in the training processes")


def merged_stats(accelerator: Any, stats: dict[str, float]) -> dict[str, float]:
    """Step stats over every process's rollouts: each key's mean over processes (a call share a process did not
    see counts as 0). Processes run equal numbers of rollouts, so the mean of means is the mean over rollouts."""
    if accelerator.num_processes == 1:
        return stats
    from accelerate.utils import gather_object

    every = gather_object([stats])
    keys = sorted({k for s in every for k in s}, key=lambda k: (k.startswith("share/"), k))
    return {k: fmean(s.get(k, 0.0) for s in every) for k in keys}


def _world_size() -> int:
    """Processes of this run (`accelerate launch` sets WORLD_SIZE in each; a plain run has one)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _per_device_rollouts(config: GRPOConfig, world: int) -> int:
    """Rollouts per process and micro-batch, so that all processes together run `group_size * prompts_per_step`
    rollouts per optimizer step, each process whole groups (its `rollout_func` sees each task `group_size` times)."""
    if config.prompts_per_step % world:
        raise ConfigError(f"prompts_per_step: {config.prompts_per_step} tasks per step do not split over {world} "
                          f"processes; use a multiple of {world}")
    return config.group_size * config.prompts_per_step // (config.gradient_accumulation_steps * world)


async def _collect(mixture: list[TrainingEnv], settings: list[Any], chosen: list[tuple[int, Example]],
                   backend: Any, group_size: int, min_group_std: float) -> list[ScoredGroup]:
    """The groups of `chosen`, each environment's run concurrently (a local policy batches across them), in the
    order of `chosen`."""
    envs = sorted({k for k, _ in chosen})
    runs = await asyncio.gather(*(collect_groups(
        mixture[k].suite.training_env, [e.task for j, e in chosen if j == k],
        [e.preferences for j, e in chosen if j == k], backend, settings[k], group_size=group_size,
        tool_names=list(mixture[k].suite.reward_tools), min_group_std=min_group_std) for k in envs))
    by_env = {k: iter(groups) for k, groups in zip(envs, runs, strict=True)}
    return [next(by_env[k]) for k, _ in chosen]


def _check_budget_left_tokens(groups: list[ScoredGroup], budget: Budget) -> None:
    """A rollout stopped by the budget before the policy's first reply has nothing to train on: fail the step."""
    for g in groups:
        for r in g.results:
            if not r.trajectory.turns and r.trajectory.termination == Termination.BUDGET:
                raise BudgetExceeded(
                    f"run_budget_usd: the run-wide budget (${budget.limit_usd:.6f} in this process; "
                    f"${budget.spent_usd:.6f} spent, ${budget.disputed_usd:.6f} disputed) refused the policy's own "
                    f"call in rollout {r.task.id}; raise run_budget_usd or leave the policy unpriced")


def _check_trl_fields(fields: dict[str, Any], trl_config: Any) -> None:
    """Every `trl:` key must be a field of TRL's GRPOConfig (an unknown one names the closest)."""
    import dataclasses
    import difflib

    known = {f.name for f in dataclasses.fields(trl_config)}
    for key in fields:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            raise ConfigError(f"trl.{key}: not a field of TRL's GRPOConfig" + (f" (did you mean {close[0]!r}?)"
                                                                               if close else ""))
