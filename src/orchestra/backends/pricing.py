"""PriceTable: one versioned table of model and tool prices; cost of a call = usage x price.

The table ships in the package (`orchestra/data/prices.yaml`, REFERENCE.md section 4 values). A model with no price is
a `ConfigError` at lookup, never $0 by accident (a model that really is free, e.g. a local one, is listed with 0).
Per-run overrides (`PriceTable.with_overrides`) let an evaluation reprice every model, e.g. with another provider's
list, without touching the table.

The release of the method this follows divided two input prices by 1e7 instead of 1e6; every price here is per
million tokens, and the unit is in the field names.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any

import yaml

from orchestra.errors import ConfigError
from orchestra.tools.spec import CostCard
from orchestra.types import Usage


@dataclass(frozen=True, slots=True)
class ModelPrice:
    input_usd_per_mtok: float
    output_usd_per_mtok: float
    provider: str | None = None

    def cost_usd(self, usage: Usage) -> float:
        return (usage.input_tokens * self.input_usd_per_mtok + usage.output_tokens * self.output_usd_per_mtok) / 1e6

    def card(self, latency_s: float = 0.0) -> CostCard:
        return CostCard(self.input_usd_per_mtok, self.output_usd_per_mtok, latency_s=latency_s)


@dataclass(frozen=True)
class PriceTable:
    version: str
    models: Mapping[str, ModelPrice] = field(default_factory=dict)
    tools: Mapping[str, CostCard] = field(default_factory=dict)

    @classmethod
    def default(cls) -> PriceTable:
        text = resources.files("orchestra").joinpath("data/prices.yaml").read_text()
        return cls.from_dict(yaml.safe_load(text))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], version: str | None = None) -> PriceTable:
        models = {}
        for name, entry in (data.get("models") or {}).items():
            try:
                models[name] = ModelPrice(float(entry["input"]), float(entry["output"]), entry.get("provider"))
            except (KeyError, TypeError, ValueError) as exc:
                raise ConfigError(f"prices.models.{name}: needs numeric `input` and `output` ($/M tokens)") from exc
        tools = {
            name: CostCard(usd_per_call=float(e.get("per_call", 0)), usd_per_second=float(e.get("per_second", 0)))
            for name, e in (data.get("tools") or {}).items()
        }
        return cls(version=str(version or data.get("version", "custom")), models=models, tools=tools)

    def model(self, name: str) -> ModelPrice:
        """The price of model `name`; unknown names are an error that lists the known ones."""
        try:
            return self.models[name]
        except KeyError:
            known = ", ".join(sorted(self.models))
            raise ConfigError(
                f"no price for model {name!r}: add it to the pool's `prices` overrides (known: {known})"
            ) from None

    def cost_usd(self, model: str, usage: Usage) -> float:
        return self.model(model).cost_usd(usage)

    def tool(self, name: str) -> CostCard:
        return self.tools.get(name, CostCard())

    def with_overrides(self, overrides: Mapping[str, Any] | None) -> PriceTable:
        """A table with `overrides` ({"models": {...}, "tools": {...}} in the file's shape) laid over this one."""
        if not overrides:
            return self
        extra = PriceTable.from_dict(overrides)
        return replace(
            self,
            version=f"{self.version}+overrides",
            models={**self.models, **extra.models},
            tools={**self.tools, **extra.tools},
        )
