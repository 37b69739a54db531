"""The one table of environments: name -> the folder (module) that implements it, imported on first use.

Every layer above `envs/` reaches environments only through this module and `orchestra.envs.base`:
`parse_config(data)` validates a mapping with a `name` into that environment's `Config` (a `ConfigError` names the
field path and the known environments), and `load_suite(config)` returns its `Suite`. The table is explicit (no
registration by import side effect); adding an environment is one folder plus one line here.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pydantic

from orchestra.config import load_config
from orchestra.envs.base import Suite
from orchestra.errors import ConfigError

ENVIRONMENTS: dict[str, str] = {
    "routerbench": "orchestra.envs.routerbench",
    "tau": "orchestra.envs.tau",
    "qa": "orchestra.envs.qa",
}


def names() -> list[str]:
    return list(ENVIRONMENTS)


def module(name: str) -> ModuleType:
    """The folder module of environment `name`; an unknown name is a ConfigError with the closest known one."""
    path = ENVIRONMENTS.get(name)
    if path is None:
        close = difflib.get_close_matches(name, ENVIRONMENTS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"environment {name!r}: unknown{hint}; known: {', '.join(ENVIRONMENTS)}")
    return importlib.import_module(path)


def describe(name: str) -> str:
    """The first line of the environment folder's docstring."""
    doc = (module(name).__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


def config_type(name: str) -> type[pydantic.BaseModel]:
    return module(name).Config  # type: ignore[no-any-return]


def parse_config(data: Mapping[str, Any] | pydantic.BaseModel, *, where: str = "env") -> pydantic.BaseModel:
    """`data` (a mapping with `name`, or an already parsed config) as its environment's `Config`."""
    if isinstance(data, pydantic.BaseModel):
        return data
    if not isinstance(data, Mapping) or "name" not in data:
        raise ConfigError(f"{where}: an environment is a mapping with a `name` (one of {', '.join(ENVIRONMENTS)})")
    cls = config_type(str(data["name"]))
    try:
        return load_config(None, cls, default=data)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def load_suite(config: Mapping[str, Any] | pydantic.BaseModel, *, part: str | None = None) -> Suite:
    """The `Suite` of `config` (parsed first when it is a mapping); `part` overrides the config's part."""
    parsed = parse_config(config)
    if part is not None:
        parsed = parsed.model_copy(update={"part": part})
    return module(str(parsed.name)).load(parsed)  # type: ignore[attr-defined, no-any-return]


def file_digest(path: str | Path) -> str:
    """sha256 of a file, or of a folder's files (relative names and contents, in name order): data identity."""
    root = Path(path)
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(root) if root.is_dir() else file.name).encode() + b"\0")
        with file.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]
