"""Scale-out: `python -m orchestra` (what `accelerate launch -m orchestra` runs in each process), and SFT and GRPO
run in two processes by `accelerate launch` (a gloo group on CPU), with a tiny random model saved to a folder and
named by `model: {kind: local, path: ...}`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from orchestra.backends.base import Sampling
from orchestra.backends.local import LocalBackend
from orchestra.backends.tiny import tiny_model, tiny_tokenizer
from orchestra.train.config import SFTConfig
from orchestra.train.grpo_trl import generating_policy
from orchestra.train.metrics import read_metrics
from orchestra.train.sft import train_sft
from orchestra.types import Message
from tests.envs import routerbench_head, save_tiny_model


def test_python_dash_m_orchestra_lists_the_commands_and_fails_like_the_script():
    shown = subprocess.run([sys.executable, "-m", "orchestra", "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    for command in ("train", "eval", "run", "serve", "demo"):
        assert f" {command} " in shown.stdout
    assert "Usage: orchestra" in shown.stdout  # the program is named as the script names it, not __main__.py

    train = subprocess.run([sys.executable, "-m", "orchestra", "train", "--help"], capture_output=True, text=True,
                           timeout=60)
    assert train.returncode == 0 and " sft " in train.stdout and " grpo " in train.stdout

    bad = subprocess.run([sys.executable, "-m", "orchestra", "no-such-command"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "no-such-command" in bad.stderr and "Traceback" not in bad.stderr


# --- two processes under `accelerate launch` (gloo on CPU) ------------------------------------------------------

WORKER = textwrap.dedent(
    """
    # One process of `accelerate launch`: trains per the config, then writes a digest of its weights before and after.
    import hashlib, json, os, sys
    from pathlib import Path
    import torch
    from orchestra.train.config import GRPOConfig, SFTConfig
    from orchestra.train.sft import load_policy_model

    def digest(model):
        h = hashlib.sha256()
        for name, p in sorted(model.named_parameters()):
            h.update(name.encode())
            h.update(p.detach().cpu().float().numpy().tobytes())
        return h.hexdigest()

    torch.set_num_threads(1)
    kind, config = sys.argv[1], json.loads(sys.argv[2])
    config = (SFTConfig if kind == "sft" else GRPOConfig).model_validate(config)
    backend = load_policy_model(config.model, seed=config.seed)
    start = digest(backend.lm)
    if kind == "sft":
        from orchestra.train.sft import train_sft
        steps = train_sft(config, backend=backend).steps
    else:
        from orchestra.train.grpo_trl import train_grpo
        steps = train_grpo(config, backend=backend).steps
    Path(config.output_dir, f"digest-{os.environ['RANK']}.json").write_text(json.dumps(
        {"start": start, "end": digest(backend.lm), "steps": steps, "world": int(os.environ["WORLD_SIZE"])}))
    """
)


@pytest.fixture(scope="module")
def routerbench(data_dir, tmp_path_factory) -> Path:
    return routerbench_head(data_dir, tmp_path_factory.mktemp("routerbench"), 60)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"))


def accelerate_launch(*program: str) -> subprocess.CompletedProcess[str]:
    """`accelerate launch` of `program` in 2 processes on this machine's CPU (gloo)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # No GPU visible: the processes form a gloo group on CPU even on a machine with GPUs.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(port), *program]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def launch(tmp_path: Path, kind: str, config: dict[str, object]) -> list[dict[str, object]]:
    """Run WORKER in 2 processes through `accelerate launch`; the digests each rank wrote, by rank."""
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    accelerate_launch(str(worker), kind, json.dumps(config))
    out = Path(str(config["output_dir"]))
    return [json.loads((out / f"digest-{rank}.json").read_text()) for rank in (0, 1)]


@pytest.mark.slow
def test_the_documented_command_accelerate_launch_dash_m_orchestra_train_sft_runs(tmp_path, routerbench, tiny_dir):
    overrides = {"model.kind": "local", "model.path": str(tiny_dir), "model.device": "cpu", "lora.rank": 0,
                 "envs": json.dumps([{"name": "routerbench", "data": str(routerbench), "max_tasks": 24}]),
                 "examples": 24, "examples_per_step": 4, "output_dir": str(tmp_path / "sft")}
    done = accelerate_launch("-m", "orchestra", "train", "sft",
                             *[a for k, v in overrides.items() for a in ("--set", f"{k}={v}")])
    assert done.stdout.count("saved ") == 1, done.stdout  # one process of the two prints (RANK 0)
    steps = [r["step"] for r in read_metrics(tmp_path / "sft" / "metrics.jsonl")]
    assert steps and steps == list(range(1, len(steps) + 1))  # written by one process
    assert (tmp_path / "sft" / "orchestrator" / "orchestra.json").is_file()


def sft_config(data: Path, model_dir: Path, output_dir: Path) -> dict[str, object]:
    """Enough SFT for the tiny model to write valid consult/answer calls about half the time (GRPO then has groups
    with a reward spread to learn from)."""
    return {"model": {"kind": "local", "path": str(model_dir), "device": "cpu"}, "lora": {"rank": 0},
            "envs": [{"name": "routerbench", "data": str(data), "dev_fraction": 0.2, "max_tasks": 24}],
            "examples": 24, "examples_per_step": 4, "epochs": 16, "learning_rate": 5e-3, "warmup_steps": 2,
            "checkpoint": {"every_steps": 1000}, "output_dir": str(output_dir), "seed": 0}


@pytest.mark.slow
def test_sft_and_a_grpo_step_in_two_processes_agree_on_the_weights(tmp_path, routerbench, tiny_dir):
    """SFT in 2 processes: both end on the same weights, which differ from the start, one metrics file is written,
    and its losses match a 1-process run on the whole batches (each process computed half of every step). Then one
    GRPO step from that SFT output in 2 processes (each runs its own tasks' groups): the same weights on both,
    changed by the step."""
    two = launch(tmp_path, "sft", sft_config(routerbench, tiny_dir, tmp_path / "sft2"))
    assert [d["world"] for d in two] == [2, 2] and two[0]["steps"] == two[1]["steps"] == 96  # 24 demonstrations, 4 a step, 16 epochs
    assert two[0]["end"] == two[1]["end"] != two[0]["start"] == two[1]["start"]
    logged = read_metrics(tmp_path / "sft2" / "metrics.jsonl")
    assert [r["step"] for r in logged] == list(range(1, 97))  # one writer: each step once
    assert (tmp_path / "sft2" / "orchestrator" / "orchestra.json").is_file()

    torch.set_num_threads(1)
    one = train_sft(SFTConfig.model_validate(sft_config(routerbench, tiny_dir, tmp_path / "sft1")))
    alone = read_metrics(tmp_path / "sft1" / "metrics.jsonl")
    assert one.steps == 96
    assert [r["loss"] for r in logged[:20]] == pytest.approx([r["loss"] for r in alone[:20]], rel=1e-4)
    assert logged[-1]["loss"] == pytest.approx(alone[-1]["loss"], rel=0.05, abs=0.01)

    grpo = {"model": {"kind": "local", "path": str(tmp_path / "sft2" / "orchestrator"), "device": "cpu"},
            "envs": [{"name": "routerbench", "data": str(routerbench), "dev_fraction": 0.2, "max_tasks": 24}],
            "lora": {"rank": 0}, "steps": 1, "group_size": 8, "prompts_per_step": 4, "learning_rate": 1e-3,
            "temperature": 1.3, "min_group_std": 0.0, "checkpoint": {"every_steps": 100},
            "output_dir": str(tmp_path / "grpo"), "seed": 0}
    ranks = launch(tmp_path, "grpo", grpo)
    assert [d["steps"] for d in ranks] == [1, 1] and [d["world"] for d in ranks] == [2, 2]
    assert ranks[0]["start"] == ranks[1]["start"] == two[0]["end"]
    assert ranks[0]["end"] == ranks[1]["end"] != ranks[0]["start"]
    stats = read_metrics(tmp_path / "grpo" / "metrics.jsonl")
    assert [r["step"] for r in stats] == [1] and stats[0]["kept_groups"] > 0
    assert (tmp_path / "grpo" / "orchestrator" / "orchestra.json").is_file()


# --- generation with the policy unwrapped (DDP, DeepSpeed ZeRO-3) -----------------------------------------------

class FakeEngine(torch.nn.Module):
    """What accelerate hands TRL under DDP or DeepSpeed: a wrapper holding the policy as `.module`."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module


def fake_trainer(engine: FakeEngine, zero_stage: int = 0) -> Any:
    plugin = SimpleNamespace(zero_stage=zero_stage) if zero_stage else None
    accelerator = SimpleNamespace(state=SimpleNamespace(deepspeed_plugin=plugin, fsdp_plugin=None),
                                  unwrap_model=lambda model: model.module)
    return SimpleNamespace(model_wrapped=engine, accelerator=accelerator,
                           args=SimpleNamespace(ds3_gather_for_generation=True, gradient_checkpointing_kwargs=None))


def counting(model: torch.nn.Module) -> list[int]:
    calls: list[int] = []
    model.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls


@pytest.mark.parametrize("zero_stage", [0, 3])
def test_rollouts_generate_with_the_unwrapped_policy_and_restore_its_training_state(zero_stage, monkeypatch):
    tok = tiny_tokenizer()
    policy, stale = tiny_model(tok, seed=1), tiny_model(tok, seed=2)
    policy.gradient_checkpointing_enable()
    policy.train()
    policy_calls, stale_calls = counting(policy), counting(stale)
    gathered: list[str] = []

    @contextlib.contextmanager
    def gathered_parameters(params: Any) -> Iterator[None]:
        assert len(list(params)) == len(list(policy.parameters()))  # the engine's (the policy's) parameters
        gathered.append("in")
        yield
        gathered.append("out")

    fake_deepspeed = SimpleNamespace(zero=SimpleNamespace(GatheredParameters=gathered_parameters))
    monkeypatch.setitem(sys.modules, "deepspeed", fake_deepspeed)
    backend = LocalBackend(stale, tok, render_tools=False)

    with generating_policy(fake_trainer(FakeEngine(policy), zero_stage), backend) as unwrapped:
        assert unwrapped is policy and backend.lm is policy
        assert not policy.training and not policy.is_gradient_checkpointing
        assert gathered == (["in"] if zero_stage == 3 else [])  # ZeRO-3: full weights while generating
        completion = asyncio.run(backend.complete([Message("user", "hi")], [], Sampling(max_tokens=4)))

    assert completion.completion_ids and len(policy_calls) >= 1 and not stale_calls
    assert policy.training and policy.is_gradient_checkpointing  # restored for the optimizer step
    assert gathered == (["in", "out"] if zero_stage == 3 else [])
