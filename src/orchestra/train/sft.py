"""SFT warm start: imitate demonstrations in the policy's own chat format, on any environment or a mixture.

The path, top to bottom: load the environments (`orchestra.train.mixture`, before any model); make demonstrations
(each environment's own source, or a teacher model) and pick each environment's share; encode each trajectory exactly
as `LocalBackend` will see it (`train.data`), leaving out (and counting) any longer than `max_sequence_tokens`;
train a LoRA adapter (or all weights) on the assistant tokens; save the orchestrator directory (`train.export`).
Checkpoints (adapter, optimizer, scheduler, RNG, data position) are written every `checkpoint.every_steps` and a
rerun of the same command resumes from the newest one.

The loop is ours rather than TRL's SFTTrainer: the sequences are token-exact multi-turn transcripts with a mask we
compute (what the model wrote), the loss is computed only where a trained token is predicted (a fifth of the
positions on RouterBench; the output layer over a 49k vocabulary dominates a small model's step), and it shares the
checkpoint format with resume tests that kill it mid-run. Device and dtype come from `model` (`device: auto` is cuda
when available).
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

from orchestra.train.checkpoint import DataPosition, latest_checkpoint, load_checkpoint, save_checkpoint
from orchestra.train.config import LoraSettings, ModelSource, SFTConfig
from orchestra.train.data import Encoded, encode_conversation
from orchestra.train.export import OrchestratorMeta, save_orchestrator
from orchestra.train.metrics import MetricsLogger
from orchestra.train.mixture import TrainingEnv, collect_demonstrations, load_mixture, teacher_backend

StepCallback = Callable[[int, int, dict[str, float]], None]


@dataclass(frozen=True)
class SFTResult:
    output_dir: Path
    steps: int
    final_loss: float
    demonstrations: int
    too_long: int = 0
    """Demonstrations left out for exceeding `max_sequence_tokens`."""


def trained_meta(mixture: Sequence[TrainingEnv], trained_by: str, *, max_tokens: int | None = None,
                 max_turns: int | None = None) -> OrchestratorMeta:
    """How the trained orchestrator is to be run: one environment's prompt and observation format, or `env` (each
    evaluated environment's own) for a mixture."""
    if len(mixture) == 1:
        suite = mixture[0].suite
        return OrchestratorMeta(prompt=suite.prompt_name, observation=suite.observation_name, render_tools=False,
                                max_tokens=max_tokens or suite.turn_tokens, max_turns=max_turns or suite.max_turns,
                                trained_by=trained_by)
    return OrchestratorMeta(prompt="env", observation="env", render_tools=False, max_tokens=max_tokens,
                            max_turns=max_turns, trained_by=trained_by)


def resolve_device(source: ModelSource) -> tuple[str, torch.dtype]:
    """(device, dtype) of `source`: auto = cuda when available; bfloat16 on cuda, float32 on cpu."""
    device = source.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    elif device == "cuda" and not torch.cuda.is_available():
        from orchestra.errors import ConfigError

        raise ConfigError("model.device: cuda was asked for but no GPU is visible; use auto or cpu")
    names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    dtype = names.get(source.dtype) or (torch.bfloat16 if device == "cuda" else torch.float32)
    return device, dtype


def load_policy_model(source: ModelSource, *, seed: int | None = None) -> Any:
    """The LocalBackend to train, on the configured device and dtype (imported lazily: torch/transformers)."""
    from orchestra.backends.local import LocalBackend
    from orchestra.errors import ConfigError

    device, dtype = resolve_device(source)
    if source.kind == "bundled":
        backend = LocalBackend.smollm2(seed=seed, render_tools=False, device=device)
    elif not source.path or not (Path(source.path) / "config.json").exists():
        raise ConfigError(f"model.path: {source.path!r} is not a model folder (no config.json); for GRPO, run "
                          "`orchestra train sft` first (it writes runs/sft/orchestrator) or point model.path at one")
    else:
        backend = LocalBackend.from_pretrained(source.path, seed=seed, render_tools=False, device=device)
    if dtype != torch.float32:
        backend.lm.to(dtype)
    return backend


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
              teacher: Any | None = None) -> SFTResult:
    """Train per `config`; `backend` replaces the configured model, `teacher` the configured teacher (a backend or
    an `InstancePolicy`, e.g. a scripted policy in tests)."""
    torch.manual_seed(config.seed)
    mixture = load_mixture(config.envs)
    source = config.demonstrations
    if source.source == "teacher" and teacher is None:
        if source.teacher is None:
            from orchestra.errors import ConfigError

            raise ConfigError("demonstrations.teacher: source teacher needs a model endpoint")
        teacher = teacher_backend(source.teacher)
    picked = asyncio.run(collect_demonstrations(mixture, config.examples, config.seed, source=source.source,
                                                teacher=teacher, attempts=source.attempts,
                                                keep_unsolved=source.keep == "all"))
    backend = backend or load_policy_model(config.model, seed=config.seed)
    every = [encode_conversation(backend, trajectory.messages, []) for _, trajectory in picked]
    encoded = [e for e in every if len(e.ids) <= config.max_sequence_tokens]
    if not encoded:
        from orchestra.errors import ConfigError

        raise ConfigError(f"max_sequence_tokens: every demonstration is longer than {config.max_sequence_tokens} "
                          "tokens; raise it or use shorter tasks")
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
    save_orchestrator(model, backend.tokenizer, out / "orchestrator", trained_meta(mixture, "sft"))
    return SFTResult(out / "orchestrator", position.step, loss_value, len(encoded), len(every) - len(encoded))


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
    device = next(model.parameters()).device
    ids, attention, trained = ids.to(device), attention.to(device), trained.to(device)
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
