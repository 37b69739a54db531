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

import pydantic
import yaml

from orchestra.config import PricesConfig, describe_validation
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
    def from_dict(cls, data: Mapping[str, Any], version: str | None = None, *, source: str = "prices") -> PriceTable:
        """A table from the price file's shape, validated (`config.PricesConfig`): an unknown or missing field is a
        `ConfigError` naming it and the expected ones. `source` names the input in errors."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: expected a mapping with `models` and/or `tools`")
        try:
            typed = PricesConfig.model_validate(dict(data))
        except pydantic.ValidationError as exc:
            raise ConfigError(describe_validation(exc, PricesConfig, prefix=source)) from None
        models = {name: ModelPrice(e.input, e.output, e.provider) for name, e in typed.models.items()}
        tools = {name: CostCard(usd_per_call=e.per_call, usd_per_second=e.per_second) for name, e in typed.tools.items()}
        return cls(version=str(version or typed.version or "custom"), models=models, tools=tools)

    def model(self, name: str) -> ModelPrice:
        """The price of model `name`; unknown names are an error that lists the known ones."""
        try:
            return self.models[name]
        except KeyError:
            known = ", ".join(sorted(self.models))
            raise ConfigError(
                f"no price for model {name!r}: add it to the pool's prices block as `prices: {{models: {{{name}: "
                f"{{input: USD_PER_M, output: USD_PER_M}}}}}}` (known: {known})"
            ) from None

    def cost_usd(self, model: str, usage: Usage) -> float:
        return self.model(model).cost_usd(usage)

    def tool(self, name: str) -> CostCard:
        return self.tools.get(name, CostCard())

    def with_overrides(self, overrides: Mapping[str, Any] | PricesConfig | None) -> PriceTable:
        """A table with `overrides` ({"models": {...}, "tools": {...}} in the file's shape) laid over this one."""
        if isinstance(overrides, PricesConfig):  # a pool's typed `prices:` block
            overrides = overrides.as_overrides()
        if not overrides:
            return self
        extra = PriceTable.from_dict(overrides, source="prices")
        return replace(
            self,
            version=f"{self.version}+overrides",
            models={**self.models, **extra.models},
            tools={**self.tools, **extra.tools},
        )
