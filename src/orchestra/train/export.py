"""The trained orchestrator directory: weights, tokenizer and `orchestra.json` (how to prompt and run it).

A directory written by `save_orchestrator` is a plain transformers model folder (LoRA merged into the weights), so
any transformers-compatible server can load it; `orchestra.json` adds what the episode needs to reproduce the
training conditions: the prompt builder's name, how observations are rendered, whether tool schemas are rendered,
and the turn and token limits. `orchestra eval --orchestrator DIR` and `orchestra serve --orchestrator DIR` read it
through `load_orchestrator`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from orchestra.errors import ConfigError

META_FILE = "orchestra.json"


@dataclass(frozen=True, slots=True)
class OrchestratorMeta:
    prompt: str = "default"
    """Name of the prompt builder (see `orchestra.evaluate.spec.PROMPTS`)."""
    observation: str = "untrusted"
    """How tool results are rendered: "untrusted" (wrapped with provenance) or "plain"."""
    render_tools: bool = True
    calls: str = "hermes"
    """The dialect the model writes tool calls in (`orchestra.toolcalls`); folders written before it was recorded
    are hermes."""
    max_tokens: int = 256
    max_turns: int = 8
    trained_by: str = ""
    base_model: str = "smollm2-135m-instruct"


def save_orchestrator(model: Any, tokenizer: Any, directory: str | Path, meta: OrchestratorMeta) -> Path:
    """Merge a LoRA adapter (if any) and write weights (safetensors), tokenizer and `orchestra.json`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    merged = model.merge_and_unload() if hasattr(model, "merge_and_unload") else model
    merged.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)
    (directory / META_FILE).write_text(json.dumps(asdict(meta), indent=2))
    return directory


def read_meta(directory: str | Path) -> OrchestratorMeta:
    path = Path(directory) / META_FILE
    if not path.exists():
        raise ConfigError(f"{directory} is not a trained orchestrator directory (no {META_FILE})")
    data = json.loads(path.read_text())
    known = set(OrchestratorMeta.__dataclass_fields__)
    return OrchestratorMeta(**{k: v for k, v in data.items() if k in known})
