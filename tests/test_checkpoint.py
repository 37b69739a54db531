"""Checkpoints (RELIABILITY R6, R8) and the JSONL metrics logger.

R6: a real training loop in a subprocess checkpoints every k steps, is killed with SIGKILL at step k + 1, resumes,
and ends with weights, optimizer, scheduler, metrics and data position equal bit for bit to an uninterrupted run.
R8: a disk-full error during a save raises loudly and leaves the previous checkpoint intact and loadable.
R6 for GRPO (slow): killed during step k + 1 and resumed, it samples the same rollouts as an uninterrupted run.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from orchestra.train import checkpoint as ckpt
from orchestra.train.checkpoint import (
    CheckpointError,
    DataPosition,
    is_complete,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from orchestra.train.metrics import MetricsLogger, read_metrics

TRAIN_LOOP = textwrap.dedent(
    """
    import random, sys, time
    import numpy as np, torch
    from orchestra.train.checkpoint import DataPosition, latest_checkpoint, load_checkpoint, save_checkpoint
    from orchestra.train.metrics import MetricsLogger

    root, out, total, every, pause_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    torch.set_num_threads(1)
    SEED, N, BATCH = 0, 40, 6  # 40 is not a multiple of 6: epochs end on a short batch
    random.seed(SEED); np.random.seed(SEED); torch.manual_seed(SEED)
    data = torch.Generator().manual_seed(1234)
    X, Y = torch.randn(N, 8, generator=data), torch.randn(N, 1, generator=data)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Dropout(0.3), torch.nn.Linear(16, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=0.05)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.7)
    position, metrics = DataPosition(0), []
    latest = latest_checkpoint(root)
    if latest is not None:
        restored = load_checkpoint(latest, model=model, optimizer=opt, scheduler=sched)
        position, metrics = restored.position, restored.metrics
        print(f"resumed {position.step} {position.epoch} {position.index}", flush=True)
    logger = MetricsLogger(out + ".jsonl", resume_after_step=position.step)
    while position.step < total:
        order = torch.randperm(N, generator=torch.Generator().manual_seed(SEED + position.epoch))
        idx = order[position.index:position.index + BATCH]
        epoch, index = position.epoch, position.index + len(idx)
        if index >= N:
            epoch, index = epoch + 1, 0
        x = X[idx] + torch.from_numpy(np.random.randn(len(idx), 8)).float() * 0.1  # numpy RNG matters
        if random.random() < 0.5:  # python RNG matters
            x = -x
        loss = ((model(x) - Y[idx]) ** 2).mean()  # torch RNG matters (dropout)
        opt.zero_grad(); loss.backward(); opt.step(); sched.step()
        position = DataPosition(position.step + 1, epoch, index)
        metrics.append({"step": position.step, "loss": loss.item(), "lr": sched.get_last_lr()[0]})
        logger.log(position.step, {"loss": loss.item()})
        if position.step % every == 0:
            save_checkpoint(root, position, model=model, optimizer=opt, scheduler=sched, metrics=metrics, keep_last=2)
        print(f"step {position.step}", flush=True)
        if position.step == pause_at:
            time.sleep(120)  # the test kills this process with SIGKILL here
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "metrics": metrics, "position": [position.step, position.epoch, position.index]}, out)
    """
)


def _start(script: Path, root: Path, out: Path, total: int, every: int, pause_at: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(script), str(root), str(out), str(total), str(every), str(pause_at)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_r6_kill9_at_step_k_plus_1_then_resume_matches_an_uninterrupted_run(tmp_path):
    script = tmp_path / "train_loop.py"
    script.write_text(TRAIN_LOOP)
    total, every = 10, 3
    reference = _start(script, tmp_path / "ref-ckpt", tmp_path / "ref.pt", total, every, -1)
    victim = _start(script, tmp_path / "ckpt", tmp_path / "run.pt", total, every, every + 1)
    try:
        for line in victim.stdout:  # type: ignore[union-attr]
            if line.strip() == f"step {every + 1}":
                break
        else:
            pytest.fail(f"training loop ended early: {victim.stderr.read()}")  # type: ignore[union-attr]
        os.kill(victim.pid, signal.SIGKILL)
        assert victim.wait(timeout=30) == -signal.SIGKILL
    finally:
        victim.kill()
    assert not (tmp_path / "run.pt").exists()
    assert latest_checkpoint(tmp_path / "ckpt").name == f"step-{every:08d}"
    assert len(read_metrics(tmp_path / "run.pt.jsonl")) == every + 1  # step k+1 was logged before the kill

    resumed = _start(script, tmp_path / "ckpt", tmp_path / "run.pt", total, every, -1)
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    assert out.splitlines()[0] == f"resumed {every} 0 {every * 6}"  # continues from k: epoch 0, 18 examples in
    assert reference.wait(timeout=120) == 0, reference.stderr.read()  # type: ignore[union-attr]

    ref = torch.load(tmp_path / "ref.pt", weights_only=True)
    run = torch.load(tmp_path / "run.pt", weights_only=True)
    for name, tensor in ref["model"].items():
        assert torch.equal(tensor, run["model"][name]), name  # bit for bit
    for pid, state in ref["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, run["optimizer"]["state"][pid][key]), (pid, key)
    assert ref["optimizer"]["param_groups"] == run["optimizer"]["param_groups"]
    assert ref["scheduler"] == run["scheduler"]
    assert ref["metrics"] == run["metrics"] and ref["position"] == run["position"] == [10, 1, 18]  # 7 steps per epoch (6 full batches + 4)
    assert read_metrics(tmp_path / "run.pt.jsonl") == read_metrics(tmp_path / "ref.pt.jsonl")
    assert [p.name for p in list_checkpoints(tmp_path / "ckpt")] == ["step-00000006", "step-00000009"]


# ---- R8: disk full --------------------------------------------------------------------------------------------


def _tiny():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    return model, opt


def _assert_intact(root: Path, model: torch.nn.Module, step: int) -> None:
    latest = latest_checkpoint(root)
    assert latest is not None and latest.name == f"step-{step:08d}"
    fresh = torch.nn.Linear(3, 2)
    restored = load_checkpoint(latest, model=fresh, restore_rng=False)
    assert restored.position.step == step
    for a, b in zip(fresh.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temp directory left behind


def test_r8_disk_full_while_writing_fails_loudly_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    model, opt = _tiny()
    save_checkpoint(tmp_path, DataPosition(3), model=model, optimizer=opt)
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"partial bytes")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    changed = torch.nn.Linear(3, 2)
    with pytest.raises(CheckpointError, match="No space left on device") as info:
        save_checkpoint(tmp_path, DataPosition(6), model=changed, optimizer=opt)
    assert "step-00000003" in str(info.value)
    monkeypatch.setattr(torch, "save", real_save)
    _assert_intact(tmp_path, model, 3)


def test_r8_disk_full_on_fsync_or_in_a_custom_model_writer(tmp_path, monkeypatch):
    model, opt = _tiny()
    save_checkpoint(tmp_path, DataPosition(3), model=model, optimizer=opt)
    calls = {"n": 0}
    real_fsync = os.fsync

    def fsync_then_full(fd):
        calls["n"] += 1
        if calls["n"] == 4:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync_then_full)
    with pytest.raises(CheckpointError):
        save_checkpoint(tmp_path, DataPosition(6), model=model, optimizer=opt)
    monkeypatch.setattr(os, "fsync", real_fsync)
    _assert_intact(tmp_path, model, 3)

    def adapter_writer(directory: Path) -> None:
        (directory / "adapter.bin").write_bytes(b"x" * 10)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(CheckpointError):
        save_checkpoint(tmp_path, DataPosition(6), save_model=adapter_writer)
    _assert_intact(tmp_path, model, 3)


# ---- the directory format -------------------------------------------------------------------------------------


def test_incomplete_and_temporary_checkpoints_are_skipped_and_cleaned(tmp_path):
    model, opt = _tiny()
    good = save_checkpoint(tmp_path, DataPosition(2), model=model, optimizer=opt)
    # a crash mid-save (temp dir), a directory without a manifest, one with a truncated file
    (tmp_path / ".tmp-step-00000009-123").mkdir()
    (tmp_path / "step-00000008").mkdir()
    truncated = save_checkpoint(tmp_path / "other", DataPosition(7), model=model, optimizer=opt)
    os.rename(truncated, tmp_path / "step-00000007")
    with open(tmp_path / "step-00000007" / "optimizer.pt", "r+b") as f:
        f.truncate(10)
    assert latest_checkpoint(tmp_path) == good
    assert not is_complete(tmp_path / "step-00000007")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "step-00000007", model=model)
    save_checkpoint(tmp_path, DataPosition(4), model=model)
    assert not (tmp_path / ".tmp-step-00000009-123").exists()
    assert latest_checkpoint(tmp_path).name == "step-00000004"


def test_keep_last_and_resaving_a_step(tmp_path):
    model, _ = _tiny()
    for step in range(1, 6):
        save_checkpoint(tmp_path, DataPosition(step), model=model, keep_last=2, metrics=[{"step": step}])
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000004", "step-00000005"]
    save_checkpoint(tmp_path, DataPosition(5, epoch=2, index=9), model=model, keep_last=2, extra={"note": "again"})
    restored = load_checkpoint(tmp_path / "step-00000005", restore_rng=False)
    assert restored.position == DataPosition(5, 2, 9) and restored.extra == {"note": "again"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-00000004", "step-00000005"]


def test_a_crash_between_the_renames_of_a_resave_is_repaired(tmp_path):
    model, _ = _tiny()
    save_checkpoint(tmp_path, DataPosition(5), model=model)
    os.rename(tmp_path / "step-00000005", tmp_path / ".old-step-00000005-999")
    save_checkpoint(tmp_path, DataPosition(6), model=model)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000005", "step-00000006"]


def test_rng_states_and_a_custom_model_writer_round_trip(tmp_path):
    def save_adapter(directory: Path) -> None:
        (directory / "adapter").mkdir()
        (directory / "adapter" / "weights.json").write_text(json.dumps([1, 2, 3]))

    loaded = {}

    def load_adapter(directory: Path) -> None:
        loaded["weights"] = json.loads((directory / "adapter" / "weights.json").read_text())

    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    path = save_checkpoint(tmp_path, DataPosition(1), save_model=save_adapter)
    expected = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    random.seed(2), np.random.seed(2), torch.manual_seed(2)
    load_checkpoint(path, load_model=load_adapter)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == expected
    assert loaded["weights"] == [1, 2, 3]
    assert "model/adapter/weights.json" in json.loads((path / ckpt.MANIFEST).read_text())["files"]


# ---- metrics --------------------------------------------------------------------------------------------------


def test_metrics_logger_appends_flushes_and_resumes(tmp_path):
    path = tmp_path / "m" / "metrics.jsonl"
    logger = MetricsLogger(path)
    for step in (1, 2, 3):
        logger.log(step, {"loss": torch.tensor(0.5 * step), "reward": np.float32(1.0), "nan": float("nan")})
        assert len(path.read_text().splitlines()) == step  # flushed before close
    logger.close()
    with open(path, "a") as f:
        f.write('{"step": 4, "loss"')  # a crash mid-line
    records = read_metrics(path)
    assert [r["step"] for r in records] == [1, 2, 3] and records[1]["loss"] == 1.0
    with MetricsLogger(path, resume_after_step=2) as resumed:
        resumed.log(3, {"loss": 9.0})
    assert [(r["step"], r["loss"]) for r in read_metrics(path)] == [(1, 0.5), (2, 1.0), (3, 9.0)]
    with MetricsLogger(path) as again:  # reopening without resume keeps everything, repairs nothing more
        again.log(4, {"loss": 1.0})
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4]


def test_metrics_corruption_in_the_middle_is_an_error(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(ValueError, match=":2:"):
        read_metrics(path)
    with pytest.raises(TypeError):
        MetricsLogger(tmp_path / "x.jsonl").log(1, {"bad": object()})


# ---- R6 for GRPO: the rollout sampling RNG ----------------------------------------------------------------------

GRPO_RUN = textwrap.dedent(
    """
    # train_grpo on a tiny random policy, as `orchestra train grpo` runs it; writes every step's sampled completions
    # to <out>/completions.jsonl (after that step's rollouts) and stops dead at step `hang_at` (the test kills it).
    import json, sys, time
    from pathlib import Path
    import torch
    from orchestra.backends.local import LocalBackend
    from orchestra.envs.base import Suite
    from orchestra.rollout.guard import wrap_untrusted
    from orchestra.rollout.prompt import default_prompt
    from orchestra.task import Instance, Task
    from orchestra.train import grpo_trl
    from orchestra.train.config import GRPOConfig
    from orchestra.train.mixture import TrainingEnv
    from orchestra.types import Outcome

    model_dir, out, hang_at, reseed = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "reseed"
    torch.set_num_threads(1)

    class Parity:
        # Solved when the reply has an even length: rewards differ within a group, so the weights move every step.
        name = "parity"
        def start(self, task):
            async def grade(trajectory):
                return Outcome(solved=len(trajectory.final_answer or "") % 2 == 0, score=1.0)
            return Instance(task, [], grade)

    tasks = [Task(f"t{i}", f"Say something about the number {i}.") for i in range(6)]
    suite = Suite(env=Parity(), tasks=tasks, identity={"env": "parity"}, prompt=default_prompt, prompt_name="default",
                  observation=wrap_untrusted, observation_name="untrusted", max_turns=1, turn_tokens=12)
    grpo_trl.load_mixture = lambda entries: [TrainingEnv(suite, 1.0)]
    collected = []
    real_collect = grpo_trl.collect_groups
    async def recording(*args, **kwargs):
        groups = await real_collect(*args, **kwargs)
        collected.append([[r.task.id, list(r.trajectory.turns[0].completion.completion_ids)]
                          for g in groups for r in g.results])
        return groups
    grpo_trl.collect_groups = recording
    backend = LocalBackend.from_pretrained(model_dir, name="tiny", render_tools=False, seed=0)
    if not reseed:  # the failure R6 guards against: a resumed run draws from a sampling RNG nobody restored
        backend.reseed = lambda seed: None
    config = GRPOConfig.model_validate({
        "lora": {"rank": 0}, "output_dir": str(out), "steps": 4, "group_size": 4, "prompts_per_step": 2,
        "learning_rate": 0.05, "kl_coef": 0.0, "temperature": 1.0, "max_turns": 1, "max_tokens_per_turn": 12,
        "min_group_std": 0.0, "checkpoint": {"every_steps": 2, "keep": 2}, "seed": 0})
    def on_step(step, total, stats):
        with open(out / "completions.jsonl", "a") as f:
            f.write(json.dumps({"step": step, "rollouts": collected[-1]}) + "\\n")
        print(f"step {step}", flush=True)
        if step == hang_at:
            time.sleep(600)
    grpo_trl.train_grpo(config, on_step=on_step, backend=backend)
    print("done", flush=True)
    """
)


def _grpo(model: Path, out: Path, hang_at: int, reseed: bool = True) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", GRPO_RUN, str(model), str(out), str(hang_at),
                             "reseed" if reseed else "no-reseed"], env=env, cwd=Path(__file__).parent.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _completions(out: Path) -> dict[int, list]:
    """Step -> its rollouts' (task id, sampled ids), the last record of each step winning (a rerun step rewrites)."""
    by_step: dict[int, list] = {}
    for line in (out / "completions.jsonl").read_text().splitlines():
        record = json.loads(line)
        by_step[record["step"]] = record["rollouts"]
    return by_step


def _finish(proc: subprocess.Popen[str]) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    return out


@pytest.mark.slow
def test_r6_grpo_killed_after_checkpoint_k_samples_the_same_completions_at_step_k_plus_1(tmp_path):
    """GRPO (TRL's trainer, orchestra's rollouts) checkpoints every k=2 steps; a run killed with SIGKILL during step
    k + 1 and resumed samples, at steps k + 1 and k + 2, exactly the completions (token ids, per task) of an
    uninterrupted run: TRL's checkpoint restores the weights, optimizer and data position, and the policy's sampling
    RNG is reset from (seed, step, process) before each step's rollouts. The weights change every step (the
    rewards differ within groups), so the equality also needs the restored weights. The check can fail: the same
    resume with the per-step reseed taken away samples different completions."""
    from tests.envs import save_tiny_model

    model = save_tiny_model(tmp_path / "tiny")
    reference = _grpo(model, tmp_path / "ref", hang_at=-1)
    victim = _grpo(model, tmp_path / "run", hang_at=3)
    try:
        for line in victim.stdout:  # type: ignore[union-attr]
            if line.strip() == "step 3":
                break
        else:
            pytest.fail("the GRPO run ended before step 3")
        os.kill(victim.pid, signal.SIGKILL)
        assert victim.wait(timeout=30) == -signal.SIGKILL
    finally:
        victim.kill()
    checkpoints = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == ["checkpoint-2"]
    from safetensors.torch import load_file

    start, trained = load_file(model / "model.safetensors"), load_file(checkpoints / "checkpoint-2" / "model.safetensors")
    assert any(not torch.equal(start[k], trained[k]) for k in start)  # two optimizer steps moved the weights
    shutil.copytree(tmp_path / "run", tmp_path / "no-reseed")
    resumed = _finish(_grpo(model, tmp_path / "run", hang_at=-1))
    assert [line for line in resumed.splitlines() if line.startswith("step")] == ["step 3", "step 4"]
    unseeded = _grpo(model, tmp_path / "no-reseed", hang_at=-1, reseed=False)
    _finish(reference)
    _finish(unseeded)

    ref, run, bad = _completions(tmp_path / "ref"), _completions(tmp_path / "run"), _completions(tmp_path / "no-reseed")
    assert sorted(ref) == sorted(run) == [1, 2, 3, 4]
    assert len(ref[3]) == 8 and len({tuple(ids) for _, ids in ref[3]}) > 1  # 2 tasks x 4 sampled rollouts
    assert ref[1] != ref[3]  # steps sample differently: not one fixed sample
    assert run[3] == ref[3] and run[4] == ref[4]  # the resumed run sampled exactly the uninterrupted run's tokens
    assert [t for t, _ in bad[3]] == [t for t, _ in ref[3]]  # same tasks at step 3 (TRL's data position) ...
    assert bad[3] != ref[3]  # ... but without the per-step reseed, other completions
