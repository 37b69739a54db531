"""SFT warm start (train/sft.py) on RouterBench demonstrations with a tiny random Qwen3: it learns, its output loads,
and its loop survives kill -9 (RELIABILITY R6) and a full disk (R8).

The tiny model reaches the training entry like any model: saved with `save_pretrained` (weights, tokenizer, chat
template) and named by `model.kind=local, model.path=...`, with `lora.rank=0` (full fine-tuning).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from orchestra.backends.local import LocalBackend
from orchestra.train import checkpoint as ckpt
from orchestra.train.checkpoint import CheckpointError, is_complete, list_checkpoints
from orchestra.train.config import SFTConfig
from orchestra.train.export import META_FILE, read_meta
from orchestra.train.metrics import read_metrics
from orchestra.train.sft import train_sft
from tests.envs import routerbench_head, save_tiny_model


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: the test machine's cores are shared, and two spinning threads on a busy core are several
    times slower than one."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def routerbench(data_dir, tmp_path_factory) -> Path:
    return routerbench_head(data_dir, tmp_path_factory.mktemp("routerbench"), 60)


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"))


def sft_overrides(data: Path, model_dir: Path, output_dir: Path, **extra: object) -> dict[str, object]:
    """A small SFT run on RouterBench rows (consult-policy demonstrations), as dotted overrides."""
    values: dict[str, object] = {
        "model.kind": "local", "model.path": str(model_dir), "lora.rank": 0,
        "envs": [{"name": "routerbench", "data": str(data), "dev_fraction": 0.2, "max_tasks": 24}],
        "examples": 24, "examples_per_step": 4, "epochs": 2, "learning_rate": 3e-3, "warmup_steps": 2,
        "checkpoint.every_steps": 4, "checkpoint.keep": 2, "output_dir": str(output_dir), "seed": 0,
    }
    values.update(extra)
    return values


def as_config(overrides: dict[str, object]) -> SFTConfig:
    nested: dict[str, object] = {}
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = nested
        for p in parents:
            node = node.setdefault(p, {})  # type: ignore[assignment]
        node[leaf] = value  # type: ignore[index]
    return SFTConfig.model_validate(nested)


def test_sft_lowers_the_loss_and_writes_a_loadable_orchestrator(tmp_path, routerbench, tiny_dir):
    config = as_config(sft_overrides(routerbench, tiny_dir, tmp_path / "sft", examples=48, epochs=3,
                                     examples_per_step=8, **{"checkpoint.every_steps": 100}))
    steps: list[tuple[int, float]] = []
    result = train_sft(config, on_step=lambda step, total, values: steps.append((step, values["loss"])))

    assert result.steps == len(steps) == 18 and result.demonstrations == 48
    losses = [loss for _, loss in steps]
    assert sum(losses[-3:]) / 3 < 0.5 * sum(losses[:3]) / 3, losses
    logged = read_metrics(tmp_path / "sft" / "metrics.jsonl")
    assert [r["step"] for r in logged] == list(range(1, 19)) and [r["loss"] for r in logged] == losses

    out = result.output_dir
    assert (out / META_FILE).is_file()
    meta = read_meta(out)
    assert meta.trained_by == "sft" and meta.render_tools is False and meta.observation == "plain"
    loaded = LocalBackend.from_pretrained(out, render_tools=False)
    start = LocalBackend.from_pretrained(tiny_dir, render_tools=False)
    trained = load_file(out / "model.safetensors")
    assert all(torch.equal(v, loaded.lm.state_dict()[k]) for k, v in trained.items())
    assert any(not torch.equal(p, q) for p, q in zip(loaded.lm.parameters(), start.lm.parameters(), strict=True))
    assert loaded.tokenizer.chat_template == start.tokenizer.chat_template


# --- R6: kill -9 and resume ---------------------------------------------------------------------------------------

RUN_UNTIL = textwrap.dedent(
    """
    # train_sft as `orchestra train sft` runs it, except that it stops dead (sleeps) after logging step `hang_at`.
    import sys, time
    from orchestra.config import load_config
    from orchestra.train.config import SFTConfig
    from orchestra.train.sft import train_sft

    hang_at, overrides = int(sys.argv[1]), sys.argv[2:]
    def on_step(step, total, values):
        if step == hang_at:
            time.sleep(600)
    train_sft(load_config(None, SFTConfig, overrides), on_step=on_step)
    """
)


def cli(*args: str) -> list[str]:
    script = Path(sys.executable).with_name("orchestra")
    if script.exists():
        return [str(script), *args]
    return [sys.executable, "-c", "from orchestra.cli import app; app()", *args]


def run_env() -> dict[str, str]:
    # One thread per process: the runs compare bit for bit, and the test machine's cores are shared.
    # String hashing stays randomized per process, as for a user: the demonstrations must not depend on it.
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def as_args(overrides: dict[str, object]) -> list[str]:
    return [f"{k}={v}" for k, v in overrides.items()]


@pytest.mark.slow
def test_sft_killed_after_a_checkpoint_resumes_and_ends_bit_for_bit_like_an_uninterrupted_run(
        tmp_path, routerbench, tiny_dir):
    every = 4
    interrupted, reference = tmp_path / "interrupted", tmp_path / "reference"
    overrides = sft_overrides(routerbench, tiny_dir, interrupted, **{"checkpoint.every_steps": every})
    total = 12  # 24 demonstrations, 4 per step, 2 epochs

    proc = subprocess.Popen([sys.executable, "-c", RUN_UNTIL, str(every + 1), *as_args(overrides)], env=run_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = interrupted / "metrics.jsonl"
    deadline = time.monotonic() + 240
    try:
        while not (metrics.exists() and any(r["step"] == every + 1 for r in read_metrics(metrics))):
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "the first run did not reach step k + 1"
            time.sleep(0.2)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert [p.name for p in list_checkpoints(interrupted / "checkpoints")] == [f"step-{every:08d}"]
    assert [r["step"] for r in read_metrics(metrics)] == list(range(1, every + 2))
    assert not (interrupted / "orchestrator").exists()
    before_kill = metrics.read_text().splitlines()[:every]
    checkpoint_inode = (interrupted / "checkpoints" / f"step-{every:08d}").stat().st_ino

    resumed = subprocess.run(cli("train", "sft", *[a for kv in as_args(overrides) for a in ("--set", kv)]),
                             env=run_env(), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    fresh = subprocess.run(cli("train", "sft", *[a for kv in as_args({**overrides, "output_dir": reference})
                                                 for a in ("--set", kv)]),
                           env=run_env(), capture_output=True, text=True, timeout=300)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr

    # It resumed rather than started over: steps 1..k were neither logged again (their step times are the first
    # run's) nor checkpointed again (a re-save replaces the directory).
    assert metrics.read_text().splitlines()[:every] == before_kill
    assert (interrupted / "checkpoints" / f"step-{every:08d}").stat().st_ino == checkpoint_inode
    got, want = read_metrics(metrics), read_metrics(reference / "metrics.jsonl")
    assert [r["step"] for r in got] == list(range(1, total + 1))  # contiguous, no duplicates
    assert [(r["loss"], r["lr"]) for r in got] == [(r["loss"], r["lr"]) for r in want]
    # step k + 1 was trained again from the checkpoint of step k, and gave the same loss as the first time
    weights = load_file(interrupted / "orchestrator" / "model.safetensors")
    expected = load_file(reference / "orchestrator" / "model.safetensors")
    assert weights.keys() == expected.keys()
    assert all(torch.equal(weights[k], expected[k]) for k in expected)
    assert [p.name for p in list_checkpoints(interrupted / "checkpoints")] == [
        p.name for p in list_checkpoints(reference / "checkpoints")]


# --- R8: disk full during a checkpoint save -----------------------------------------------------------------------

def digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_disk_full_during_a_checkpoint_fails_loudly_and_keeps_the_previous_one(tmp_path, routerbench, tiny_dir,
                                                                                 monkeypatch):
    out = tmp_path / "sft"
    config = as_config(sft_overrides(routerbench, tiny_dir, out, **{"checkpoint.every_steps": 2}))
    root = out / "checkpoints"
    first: dict[str, str] = {}
    real_write = ckpt._write

    def full_disk(path: Path, write) -> None:
        if path.parent.name.startswith(".tmp-step-00000004"):
            with open(path, "wb") as f:
                f.write(b"\0" * 100)  # a partial file, then the disk is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        real_write(path, write)

    def on_step(step: int, total: int, values: dict[str, float]) -> None:
        if step == 3:
            first.update(digest(root / "step-00000002"))

    monkeypatch.setattr(ckpt, "_write", full_disk)
    with pytest.raises(CheckpointError, match="No space left on device") as failure:
        train_sft(config, on_step=on_step)
    assert "step-00000002" in str(failure.value)  # says which checkpoint is still good

    assert [p.name for p in list_checkpoints(root)] == ["step-00000002"]
    assert is_complete(root / "step-00000002") and digest(root / "step-00000002") == first
    assert sorted(p.name for p in root.iterdir()) == ["step-00000002"]  # no temp directory left behind
    assert not (out / "orchestrator").exists()

    monkeypatch.setattr(ckpt, "_write", real_write)  # space freed: the same command resumes from step 2
    seen: list[int] = []
    result = train_sft(config, on_step=lambda step, total, values: seen.append(step))
    assert seen[0] == 3 and result.steps == 12
    assert [r["step"] for r in read_metrics(out / "metrics.jsonl")] == list(range(1, 13))
    assert json.loads((result.output_dir / META_FILE).read_text())["trained_by"] == "sft"


def test_the_sft_loss_is_the_weighted_mean_of_the_written_tokens_cross_entropies(tiny_dir):
    """decision_weight reaches the loss: the weighted mean over written tokens, equal to the plain mean when every
    weight is 1 (so decision_weight 1 trains exactly as before)."""
    from orchestra.train.data import Encoded
    from orchestra.train.sft import _padded, _TrainedTokenLoss

    model = LocalBackend.from_pretrained(tiny_dir, render_tools=False).lm
    ids = tuple(range(5, 17))
    mask = (0,) * 4 + (1,) * 8
    weights = (0.0,) * 4 + (1.0, 5.0, 5.0, 1.0, 1.0, 1.0, 5.0, 1.0)
    loss_module = _TrainedTokenLoss(model)
    with torch.no_grad():
        plain, count = loss_module(*_padded([Encoded(ids, mask)], 0, "cpu"))
        weighted, total = loss_module(*_padded([Encoded(ids, mask, weights)], 0, "cpu"))
        logits = model(input_ids=torch.tensor([ids])).logits[0, :-1]
        ce = torch.nn.functional.cross_entropy(logits.float(), torch.tensor(ids[1:]), reduction="none")
    w = torch.tensor(weights[1:])
    assert float(count) == 8 and float(total) == float(w.sum())  # position t predicts token t + 1
    assert float(plain) == pytest.approx(float(ce[w > 0].mean()), rel=1e-5)
    assert float(weighted) == pytest.approx(float((ce * w).sum() / w.sum()), rel=1e-5)
    assert float(weighted) != pytest.approx(float(plain), rel=1e-3)
