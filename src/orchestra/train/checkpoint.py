"""Training checkpoints that survive kill -9 and a full disk (RELIABILITY R6, R8).

A checkpoint is a directory `step-00000012/` under a root holding: the model weights (`model.pt`, a state_dict, or
whatever a caller-supplied `save_model(dir)` writes under `model/`, e.g. a LoRA adapter), `optimizer.pt`,
`scheduler.pt`, the python/numpy/torch RNG states (`rng.json`, `rng.pt`), `state.json` (data position, metrics so far,
caller extras) and, last, `manifest.json` listing every file with its size.

Invariants
- Atomic: everything is written into a hidden temp directory, each file fsynced, the manifest last, then the
  directory is renamed to its final name and the root fsynced. A crash at any point leaves either the complete
  checkpoint or a temp directory that `latest_checkpoint` ignores (and the next save removes).
- Loud: a failed save (ENOSPC, EIO, ...) removes its temp directory and raises `CheckpointError`; checkpoints already
  on disk are untouched, because old ones are pruned only after the new one is in place.
- Resumable bit for bit: the data position is (step, epoch, index within the epoch). The caller's sampler must order
  an epoch as a function of (seed, epoch), e.g. `torch.randperm(n, generator=torch.Generator().manual_seed(seed +
  epoch))`, so the position alone says which example comes next. The global python, numpy and torch (CPU and CUDA)
  RNG states are saved at the step boundary and restored on load; RNG objects the caller owns go into `extra`.
- One writer per root: pruning and temp-directory clean-up assume no other process saves into the same root.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from orchestra.errors import OrchestraError

FORMAT_VERSION = 1
PREFIX = "step-"
MANIFEST = "manifest.json"
_TEMP_PREFIXES = (".tmp-", ".trash-", ".old-")


class CheckpointError(OrchestraError):
    """A checkpoint could not be written, or the one asked for is incomplete. Earlier checkpoints are intact."""


@dataclass(frozen=True, slots=True)
class DataPosition:
    """Where training stands: optimizer steps done, current epoch, examples of that epoch already consumed."""

    step: int
    epoch: int = 0
    index: int = 0


@dataclass(frozen=True)
class Restored:
    """What `load_checkpoint` gives back besides the objects it loaded into."""

    path: Path
    position: DataPosition
    metrics: list[dict[str, Any]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)


def save_checkpoint(
    root: str | Path,
    position: DataPosition,
    *,
    model: torch.nn.Module | None = None,
    save_model: Callable[[Path], None] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    metrics: Sequence[Mapping[str, Any]] = (),
    extra: Mapping[str, Any] | None = None,
    keep_last: int = 3,
) -> Path:
    """Write the checkpoint of `position.step` under `root` atomically; keep the newest `keep_last`; return its path.

    Model weights come from `save_model(directory)` when given (it must write only inside `directory`), else from
    `model.state_dict()`. Raises `CheckpointError` when anything fails; nothing older is touched in that case.
    """
    if keep_last < 1:
        raise ValueError("keep_last must be at least 1")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(root)
    final = root / f"{PREFIX}{position.step:08d}"
    temp = root / f".tmp-{final.name}-{os.getpid()}"
    try:
        temp.mkdir()
        _write_contents(temp, position, model, save_model, optimizer, scheduler, metrics, extra)
        _publish(temp, final)
    except BaseException as exc:
        shutil.rmtree(temp, ignore_errors=True)
        if isinstance(exc, OSError):
            previous = latest_checkpoint(root)
            raise CheckpointError(
                f"saving checkpoint step {position.step} under {root} failed ({exc}); "
                f"the latest complete checkpoint is still {previous}"
            ) from exc
        raise
    _prune(root, keep_last)
    return final


def load_checkpoint(
    path: str | Path,
    *,
    model: torch.nn.Module | None = None,
    load_model: Callable[[Path], None] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any | None = None,
    restore_rng: bool = True,
) -> Restored:
    """Load a complete checkpoint into the given objects and (by default) restore the global RNG states."""
    path = Path(path)
    if not is_complete(path):
        raise CheckpointError(f"{path} is not a complete checkpoint (missing or mismatched manifest)")
    if load_model is not None:
        load_model(path / "model")
    elif model is not None:
        model.load_state_dict(_load_tensors(path / "model.pt"))
    if optimizer is not None:
        optimizer.load_state_dict(_load_tensors(path / "optimizer.pt"))
    if scheduler is not None:
        scheduler.load_state_dict(_load_tensors(path / "scheduler.pt"))
    if restore_rng:
        restore_rng_state(json.loads((path / "rng.json").read_text()), _load_tensors(path / "rng.pt"))
    state = json.loads((path / "state.json").read_text())
    return Restored(path=path, position=DataPosition(**state["position"]), metrics=state["metrics"],
                    extra=state["extra"])


def latest_checkpoint(root: str | Path) -> Path | None:
    """The complete checkpoint with the highest step under `root`, or None; temp and incomplete ones are skipped."""
    found = list_checkpoints(root)
    return found[-1] if found else None


def list_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    steps = [(_step_of(p), p) for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX)]
    return [p for step, p in sorted((s, p) for s, p in steps if s is not None) if is_complete(p)]


def is_complete(path: Path) -> bool:
    """True when `path` has a manifest and every file it lists exists with the listed size."""
    try:
        manifest = json.loads((path / MANIFEST).read_text())
        files = manifest["files"]
        return manifest.get("format") == FORMAT_VERSION and all(
            (path / name).is_file() and (path / name).stat().st_size == size for name, size in files.items()
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def capture_rng_state() -> tuple[dict[str, Any], dict[str, Any]]:
    """The global RNG states: (JSON-able python and numpy states, torch tensors for CPU and each CUDA device)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    plain = {"python": [version, list(internal), gauss],
             "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)]}
    tensors: dict[str, Any] = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["cuda"] = torch.cuda.get_rng_state_all()
    return plain, tensors


def restore_rng_state(plain: Mapping[str, Any], tensors: Mapping[str, Any]) -> None:
    """Inverse of `capture_rng_state`."""
    version, internal, gauss = plain["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = plain["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["cpu"])
    if "cuda" in tensors and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(tensors["cuda"])


def _write_contents(
    directory: Path, position: DataPosition, model: torch.nn.Module | None,
    save_model: Callable[[Path], None] | None, optimizer: torch.optim.Optimizer | None, scheduler: Any | None,
    metrics: Sequence[Mapping[str, Any]], extra: Mapping[str, Any] | None,
) -> None:
    if save_model is not None:
        (directory / "model").mkdir()
        save_model(directory / "model")
    elif model is not None:
        _write(directory / "model.pt", lambda f: torch.save(model.state_dict(), f))
    if optimizer is not None:
        _write(directory / "optimizer.pt", lambda f: torch.save(optimizer.state_dict(), f))
    if scheduler is not None:
        _write(directory / "scheduler.pt", lambda f: torch.save(scheduler.state_dict(), f))
    plain, tensors = capture_rng_state()
    _write(directory / "rng.json", lambda f: f.write(json.dumps(plain).encode()))
    _write(directory / "rng.pt", lambda f: torch.save(tensors, f))
    state = {"position": asdict(position), "metrics": [dict(m) for m in metrics], "extra": dict(extra or {})}
    _write(directory / "state.json", lambda f: f.write(json.dumps(state).encode()))
    files = {}
    for file in sorted(p for p in directory.rglob("*") if p.is_file()):
        if file.parent != directory:
            _fsync_path(file)  # written by save_model, which may not have synced it
        files[file.relative_to(directory).as_posix()] = file.stat().st_size
    manifest = {"format": FORMAT_VERSION, "step": position.step, "files": files}
    _write(directory / MANIFEST, lambda f: f.write(json.dumps(manifest, indent=1).encode()))
    for sub in sorted((p for p in directory.rglob("*") if p.is_dir()), reverse=True):
        _fsync_dir(sub)
    _fsync_dir(directory)


def _publish(temp: Path, final: Path) -> None:
    """Rename the finished temp directory to its final name (replacing an older save of the same step)."""
    if final.exists():
        old = final.with_name(f".old-{final.name}-{os.getpid()}")
        os.rename(final, old)
        os.rename(temp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(temp, final)
    _fsync_dir(final.parent)


def _prune(root: Path, keep_last: int) -> None:
    for old in list_checkpoints(root)[:-keep_last]:
        trash = old.with_name(f".trash-{old.name}")
        os.rename(old, trash)  # out of sight first, so a crash mid-delete never leaves a half checkpoint
        shutil.rmtree(trash, ignore_errors=True)


def _remove_leftovers(root: Path) -> None:
    """Temp, trash and replaced directories left by a crashed save (one writer per root is assumed)."""
    for p in sorted(root.iterdir()):
        if not (p.is_dir() and p.name.startswith(_TEMP_PREFIXES)):
            continue
        if p.name.startswith(".old-"):
            # A crash between the two renames of `_publish`: the replaced checkpoint is the only copy of its step.
            original = root / p.name[len(".old-"):].rsplit("-", 1)[0]
            if not original.exists() and is_complete(p):
                os.rename(p, original)
                continue
        shutil.rmtree(p, ignore_errors=True)


def _write(path: Path, write: Callable[[Any], Any]) -> None:
    with open(path, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def _fsync_path(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _load_tensors(path: Path) -> Any:
    return torch.load(path, map_location="cpu", weights_only=True)


def _step_of(path: Path) -> int | None:
    digits = path.name[len(PREFIX):]
    return int(digits) if digits.isdigit() else None
