"""SFT warm start: imitate a consult-and-compare policy's trajectories in the policy's own chat format.

The path, top to bottom: load the training part of RouterBench; sample each task's preference; run the demonstration
policy (`orchestra.envs.routerbench.demonstrations`) through the real episode loop; rebalance so disagreements (when escalation
is right) are not drowned out; encode each trajectory exactly as `LocalBackend` will see it (`train.data`); train a
LoRA adapter (or all weights) on the assistant tokens; save the orchestrator directory (`train.export`).
Checkpoints (adapter, optimizer, scheduler, RNG, data position) are written every `checkpoint.every_steps` and a
rerun of the same command resumes from the newest one.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from orchestra.backends.base import ChatBackend
from orchestra.envs.routerbench.env import RouterBench, compact_prompt
from orchestra.envs.routerbench.env import load as load_routerbench
from orchestra.preferences import Limits
from orchestra.rollout.batch import EpisodeSettings, run_task
from orchestra.rollout.guard import plain
from orchestra.train.checkpoint import DataPosition, latest_checkpoint, load_checkpoint, save_checkpoint
from orchestra.train.config import TURN_TOKENS, LoraSettings, ModelSource, RouterBenchData, SFTConfig
from orchestra.train.data import Encoded, Example, encode_conversation, rebalance, sample_examples
from orchestra.envs.routerbench.demonstrations import ConsultPolicy, consult_backend, fit_consult_policy
from orchestra.train.export import OrchestratorMeta, save_orchestrator
from orchestra.train.metrics import MetricsLogger
from orchestra.types import Trajectory

StepCallback = Callable[[int, int, dict[str, float]], None]
Teacher = Callable[[Example], ChatBackend]
"""Builds the demonstration policy of one example (default: the consult policy refit without its avoided models)."""

COST_SHARE = {"default": 0.3, "cheapest": 0.1, "accuracy": 1.0}
"""The demonstration policy's cost budget (share of always asking the escalation model) per preference family."""
DEMO_SETTINGS = EpisodeSettings(limits=Limits(max_turns=3), build_prompt=compact_prompt, render_observation=plain)


@dataclass(frozen=True)
class SFTResult:
    output_dir: Path
    steps: int
    final_loss: float
    demonstrations: int


def load_env(data: RouterBenchData, part: str) -> RouterBench:
    return load_routerbench(data.data, dev_fraction=data.dev_fraction, seed=data.seed, part=part)


async def collect_demonstrations(env: RouterBench, examples: Sequence[Example], *,
                                 teacher: Teacher | None = None) -> list[tuple[Example, Trajectory]]:
    """Run the demonstration policy (`teacher`, or the consult policy refit per set of avoided models) on every
    example."""
    policies: dict[tuple[Any, ...], ConsultPolicy] = {}
    out = []
    for example in examples:
        if teacher is not None:
            policy = teacher(example)
        else:
            offered = example.task.metadata.get("offered") or env.models
            factors = example.task.metadata.get("price_factors") or {}
            key = (example.avoided, tuple(offered), tuple(sorted(factors.items())), example.family)
            if key not in policies:
                policies[key] = fit_consult_policy(
                    env.rows, allowed=[m for m in offered if m not in example.avoided], price_factors=factors,
                    max_cost_share=COST_SHARE.get(example.family, COST_SHARE["default"]))
            policy = consult_backend(policies[key])
        result = await run_task(env, example.task, policy, DEMO_SETTINGS, preferences=example.preferences)
        out.append((example, result.trajectory))
    return out


def load_policy_model(source: ModelSource, *, seed: int | None = None) -> Any:
    """The LocalBackend to train (imported lazily: torch/transformers)."""
    from orchestra.backends.local import LocalBackend

    if source.kind == "bundled":
        return LocalBackend.smollm2(seed=seed, render_tools=False)
    if not source.path:
        raise ValueError("model.path is required when model.kind is 'local'")
    return LocalBackend.from_pretrained(source.path, seed=seed, render_tools=False)


def with_lora(model: Any, lora: LoraSettings) -> Any:
    if lora.rank == 0:
        return model
    from peft import get_peft_model

    return get_peft_model(model, lora_config(lora, model.config.num_hidden_layers))


def lora_config(lora: LoraSettings, num_layers: int) -> Any:
    """The peft config of `lora` for a model with `num_layers` layers."""
    from peft import LoraConfig

    layers = list(range(max(0, num_layers - lora.top_layers), num_layers)) if lora.top_layers else None
    return LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                      target_modules=list(lora.target_modules), layers_to_transform=layers, task_type="CAUSAL_LM")


def train_sft(config: SFTConfig, *, on_step: StepCallback | None = None, backend: Any | None = None,
              teacher: Teacher | None = None) -> SFTResult:
    torch.manual_seed(config.seed)
    env = load_env(config.data, "train")
    examples = sample_examples(env, config.preferences, config.seed, config.data.max_tasks)
    demos = asyncio.run(collect_demonstrations(env, examples, teacher=teacher))
    picked = rebalance(demos, config.disagreement_share, config.examples, config.seed)
    backend = backend or load_policy_model(config.model, seed=config.seed)
    encoded = [encode_conversation(backend, trajectory.messages, []) for _, trajectory in picked]
    model = with_lora(backend.lm, config.lora)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    steps_per_epoch = math.ceil(len(encoded) / config.examples_per_step)
    total = max(1, math.ceil(steps_per_epoch * config.epochs))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _warmup_linear(config.warmup_steps, total))
    out = Path(config.output_dir)
    ckpt_root = out / "checkpoints"
    position = DataPosition(step=0, epoch=0, index=0)
    resumed = latest_checkpoint(ckpt_root)
    if resumed is not None:
        position = load_checkpoint(resumed, load_model=_adapter_loader(model), optimizer=optimizer,
                                   scheduler=scheduler).position
    pad_id = backend.pad_id
    loss_value = float("nan")
    with MetricsLogger(out / "metrics.jsonl", resume_after_step=position.step) as metrics:
        while position.step < total:
            order = torch.randperm(len(encoded), generator=torch.Generator().manual_seed(config.seed + position.epoch))
            batch_ids = order[position.index : position.index + config.examples_per_step].tolist()
            started = time.perf_counter()
            loss_value = _train_step(model, optimizer, scheduler, [encoded[i] for i in batch_ids], pad_id)
            index = position.index + config.examples_per_step
            epoch = position.epoch
            if index >= len(encoded):
                epoch, index = epoch + 1, 0
            position = DataPosition(step=position.step + 1, epoch=epoch, index=index)
            values = {"loss": loss_value, "lr": scheduler.get_last_lr()[0],
                      "step_s": time.perf_counter() - started}
            metrics.log(position.step, values)
            if on_step is not None:
                on_step(position.step, total, values)
            if position.step % config.checkpoint.every_steps == 0 and position.step < total:
                save_checkpoint(ckpt_root, position, save_model=_adapter_saver(model), optimizer=optimizer,
                                scheduler=scheduler, keep_last=config.checkpoint.keep)
    model.eval()
    meta = OrchestratorMeta(prompt="routerbench-compact", observation="plain", render_tools=False,
                            max_tokens=TURN_TOKENS, max_turns=3, trained_by="sft")
    save_orchestrator(model, backend.tokenizer, out / "orchestrator", meta)
    return SFTResult(out / "orchestrator", position.step, loss_value, len(picked))


def _train_step(model: Any, optimizer: Any, scheduler: Any, batch: Sequence[Encoded], pad_id: int) -> float:
    """One optimizer step: mean cross-entropy over the tokens the model is to write.

    Logits are computed only where a trained token is predicted (about a fifth of the positions), not over the
    whole sequence: the output layer over a 49k vocabulary is a large share of a small model's cost and memory.
    """
    width = max(len(e.ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    trained = torch.zeros((len(batch), width), dtype=torch.bool)
    for row, example in enumerate(batch):
        n = len(example.ids)
        ids[row, :n] = torch.tensor(example.ids)
        attention[row, :n] = 1
        trained[row, :n] = torch.tensor(example.mask, dtype=torch.bool)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = base.model(input_ids=ids, attention_mask=attention).last_hidden_state
    predicts = trained[:, 1:]  # position t predicts token t + 1
    logits = base.lm_head(hidden[:, :-1][predicts])
    loss = torch.nn.functional.cross_entropy(logits.float(), ids[:, 1:][predicts])
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss.detach())


def _warmup_linear(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))

    return factor


def _adapter_saver(model: Any) -> Callable[[Path], None]:
    def save(directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        state = {k: v.detach().cpu() for k, v in model.state_dict().items() if k in trainable}
        torch.save(state, directory / "trainable.pt")

    return save


def _adapter_loader(model: Any) -> Callable[[Path], None]:
    def load(directory: Path) -> None:
        state = torch.load(directory / "trainable.pt", weights_only=True)
        missing = model.load_state_dict(state, strict=False)
        if missing.unexpected_keys:
            raise ValueError(f"checkpoint has unexpected keys: {missing.unexpected_keys[:3]}")

    return load
