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

Several processes: under `accelerate launch -m orchestra train sft ...` each process holds the model (DDP through
accelerate's `Accelerator`), takes its share of every step's examples, and gradients are averaged in the backward
pass, weighted so that a step equals one process's step on the whole batch up to float rounding. The main process
alone makes the demonstrations (sent to the others) and writes checkpoints, metrics and the orchestrator folder.
One process runs exactly as it would without accelerate (bit for bit).
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
                                calls=suite.calls, max_tokens=max_tokens or suite.turn_tokens,
                                max_turns=max_turns or suite.max_turns, trained_by=trained_by)
    return OrchestratorMeta(prompt="env", observation="env", render_tools=False, calls=mixture_calls(mixture),
                            max_tokens=max_tokens, max_turns=max_turns, trained_by=trained_by)


def mixture_calls(mixture: Sequence[TrainingEnv]) -> str:
    """The one tool-call dialect the mixture's environments write (a policy writes one)."""
    dialects = {e.suite.calls for e in mixture}
    if len(dialects) > 1:
        from orchestra.errors import ConfigError

        raise ConfigError("envs: the environments write tool calls in different dialects "
                          f"({', '.join(f'{e.suite.name}: {e.suite.calls}' for e in mixture)}); set `calls` alike")
    return dialects.pop()


def speak(backend: Any, mixture: Sequence[TrainingEnv], source: ModelSource | None = None) -> Any:
    """`backend` set to write the mixture's tool-call dialect; a trained orchestrator folder (`source.path`) must
    have been trained to write it."""
    calls = mixture_calls(mixture)
    if source is not None and source.path and (Path(source.path) / "orchestra.json").exists():
        from orchestra.errors import ConfigError
        from orchestra.train.export import read_meta

        trained = read_meta(source.path).calls
        if trained != calls:
            raise ConfigError(f"model.path: {source.path} was trained to write {trained} tool calls, but the "
                              f"environments' are {calls} (set the environment's `calls: {trained}`)")
    backend.chat_format.calls = calls
    return backend


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
    an `InstancePolicy`, e.g. a scripted policy in tests). Under `accelerate launch` every process runs this."""
    torch.manual_seed(config.seed)
    accelerator = _accelerator(config.model)  # before the model loads: each process then loads onto its own GPU
    mixture = load_mixture(config.envs)
    picked = _demonstrations(config, mixture, teacher, accelerator)
    backend = speak(backend or load_policy_model(config.model, seed=config.seed), mixture, config.model)
    every = [encode_conversation(backend, trajectory.messages, [], config.decision_weight)
             for _, trajectory in picked]
    encoded = [e for e in every if len(e.ids) <= config.max_sequence_tokens]
    if not encoded:
        from orchestra.errors import ConfigError

        raise ConfigError(f"max_sequence_tokens: every demonstration is longer than {config.max_sequence_tokens} "
                          "tokens; raise it or use shorter tasks")
    model = with_lora(backend.lm, config.lora)
    model.train()
    steps, loss_value = _fit(model, encoded, backend.pad_id, config, accelerator, on_step)
    out = Path(config.output_dir)
    model.eval()
    if accelerator.is_main_process:
        save_orchestrator(model, backend.tokenizer, out / "orchestrator", trained_meta(mixture, "sft"))
    accelerator.wait_for_everyone()  # every process returns once the orchestrator folder is complete
    return SFTResult(out / "orchestrator", steps, loss_value, len(encoded), len(every) - len(encoded))


def _accelerator(source: ModelSource) -> Any:
    """The process group this run belongs to: one process (a plain run) or those of `accelerate launch`."""
    from accelerate import Accelerator

    return Accelerator(cpu=resolve_device(source)[0] == "cpu")


def _demonstrations(config: SFTConfig, mixture: Sequence[TrainingEnv], teacher: Any | None,
                    accelerator: Any) -> list[Any]:
    """The picked (example, trajectory) pairs, made once by the main process and sent to the others: a teacher is
    asked once, and every process trains on the same demonstrations."""
    from orchestra.train.mixture import run_budget as mixture_budget

    picked: list[Any] | None = None
    if accelerator.is_main_process:  # the main process alone asks the teacher, so it holds the whole budget
        source = config.demonstrations
        if source.source == "teacher" and teacher is None:
            if source.teacher is None:
                from orchestra.errors import ConfigError

                raise ConfigError("demonstrations.teacher: source teacher needs a model endpoint")
            teacher = teacher_backend(source.teacher)
        picked = asyncio.run(collect_demonstrations(mixture, config.examples, config.seed, source=source.source,
                                                    teacher=teacher, attempts=source.attempts,
                                                    keep_unsolved=source.keep == "all",
                                                    budget=mixture_budget(config.run_budget_usd)))
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        picked = broadcast_object_list([picked])[0]
    assert picked is not None
    return picked


def _fit(model: Any, encoded: Sequence[Encoded], pad_id: int, config: SFTConfig, accelerator: Any,
         on_step: StepCallback | None) -> tuple[int, float]:
    """The optimizer loop, resumed from the newest checkpoint; returns (steps done, last loss).

    Every process walks the same shuffled order; of each step's examples, process r takes every world-th one from
    position r. Only the main process writes metrics and checkpoints (all of them load a checkpoint on resume).
    The scheduler is not handed to accelerate: each process steps its own copy once per optimizer step.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=0.0)
    loss_module, optimizer = accelerator.prepare(_TrainedTokenLoss(model), optimizer)
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
    main = accelerator.is_main_process
    loss_value = float("nan")
    metrics = MetricsLogger(out / "metrics.jsonl", resume_after_step=position.step) if main else None
    try:
        while position.step < total:
            order = torch.randperm(len(encoded), generator=torch.Generator().manual_seed(config.seed + position.epoch))
            batch_ids = order[position.index : position.index + config.examples_per_step].tolist()
            started = time.perf_counter()
            loss_value = _train_step(loss_module, params, optimizer, scheduler, [encoded[i] for i in batch_ids],
                                     pad_id, accelerator)
            index = position.index + config.examples_per_step
            epoch = position.epoch
            if index >= len(encoded):
                epoch, index = epoch + 1, 0
            position = DataPosition(step=position.step + 1, epoch=epoch, index=index)
            values = {"loss": loss_value, "lr": scheduler.get_last_lr()[0], "step_s": time.perf_counter() - started}
            if metrics is not None:
                metrics.log(position.step, values)
            if on_step is not None and main:
                on_step(position.step, total, values)
            if position.step % config.checkpoint.every_steps == 0 and position.step < total:
                if main:
                    save_checkpoint(ckpt_root, position, save_model=_adapter_saver(model), optimizer=optimizer,
                                    scheduler=scheduler, keep_last=config.checkpoint.keep)
                accelerator.wait_for_everyone()
    finally:
        if metrics is not None:
            metrics.close()
    return position.step, loss_value


class _TrainedTokenLoss(torch.nn.Module):
    """The SFT loss as one module call: (sum of cross-entropies, count) over the tokens the model is to write.

    Logits are computed only where a trained token is predicted (about a fifth of the positions), not over the
    whole sequence: the output layer over a 49k vocabulary is a large share of a small model's cost and memory.
    Being one module's forward, it is what data parallelism wraps (DDP under `accelerate launch`), so gradients are
    averaged over processes in the backward pass although the body and the head are called separately.
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor, attention: torch.Tensor, trained: torch.Tensor) -> tuple[torch.Tensor,
                                                                                                    torch.Tensor]:
        """`trained`: each token's loss weight (0: not written by the model). Returns the weighted mean
        cross-entropy and the total weight."""
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        hidden = base.model(input_ids=ids, attention_mask=attention).last_hidden_state
        predicts = trained[:, 1:] > 0  # position t predicts token t + 1
        logits = base.lm_head(hidden[:, :-1][predicts])
        weights, targets = trained[:, 1:][predicts], ids[:, 1:][predicts]
        if bool((weights == 1).all()):  # unweighted: the plain mean, bit for bit what runs before weights gave
            return torch.nn.functional.cross_entropy(logits.float(), targets), weights.sum()
        losses = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="none")
        return (losses * weights).sum() / weights.sum(), weights.sum()


def _train_step(loss_module: Any, params: list[torch.nn.Parameter], optimizer: Any, scheduler: Any,
                batch: Sequence[Encoded], pad_id: int, accelerator: Any) -> float:
    """One optimizer step: mean cross-entropy over the batch's trained tokens (all processes' shards together).

    With several processes, each one's mean is weighted by its share of the batch's trained tokens (times the
    process count, which DDP's gradient average divides out), so the step equals one process's on the whole batch
    up to float rounding. A process whose shard is empty (a short last batch) runs its first example with weight 0,
    as every process must join each gradient all-reduce. One process: the loss as computed, nothing rescaled.
    """
    world, rank = accelerator.num_processes, accelerator.process_index
    shard = list(batch[rank::world]) or list(batch[:1])
    ids, attention, trained = _padded(shard, pad_id, accelerator.device)
    loss, count = loss_module(ids, attention, trained)
    if world > 1:
        count = count * 0 if not batch[rank::world] else count
        total = accelerator.reduce(count.detach().clone(), reduction="sum")
        weighted = loss * (count * world / total)
        reported = float(accelerator.reduce((loss.detach() * count).clone(), reduction="sum") / total)
        loss = weighted
    else:
        reported = float(loss.detach())
    accelerator.backward(loss)
    accelerator.clip_grad_norm_(params, 1.0)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return reported


def _padded(batch: Sequence[Encoded], pad_id: int, device: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, attention mask, per-token loss weights) of `batch`, right-padded to its longest sequence, on `device`."""
    width = max(len(e.ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    trained = torch.zeros((len(batch), width), dtype=torch.float32)
    for row, example in enumerate(batch):
        n = len(example.ids)
        ids[row, :n] = torch.tensor(example.ids)
        attention[row, :n] = 1
        trained[row, :n] = torch.tensor(example.weights if example.weights is not None else example.mask,
                                        dtype=torch.float32)
    return ids.to(device), attention.to(device), trained.to(device)


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
