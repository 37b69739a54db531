"""Settings of the `routerbench` environment: data and split, and how training examples draw their preference."""

from __future__ import annotations

from typing import Literal

import pydantic

from orchestra.config import Strict

TURN_TOKENS = {"hermes": 80, "compact": 40}
"""Generated tokens per turn of a RouterBench orchestrator, per call dialect: two calls take about 64 tokens with
SmolLM2 in hermes, 19-24 in compact (`ask(model=mixtral)`)."""
MAX_TURNS = 3
"""Turns of a trained RouterBench orchestrator: consult, then answer (one spare)."""


class PreferenceMix(Strict):
    """How training examples draw their preference.

    `sampler: routerbench` (the default, what the demo trains and evaluates): every model offered at its recorded
    price (or, with `vary_models`, a random subset at random prices; with `vary_prices`, every model with
    `repriced_models` of them at random prices), P either the default (p_outcome 1, p_cost
    `cost_weight`) or, for `avoid_share` of the examples, "avoid one provider's models". `sampler: paper`: the
    paper's scheme through `orchestra.synth.preferences`: per example a random subset of at least `min_models`
    models, prices repriced by per-model log-uniform factors in `multiplier_range` for `reprice_share` of the
    examples, and P drawn from `families` (corner, avoid, cheapest, accuracy) with its instruction in the prompt.
    """

    sampler: Literal["routerbench", "paper"] = pydantic.Field(
        "routerbench", description="routerbench: default/avoid-a-provider; paper: subsets, repricing, P families.")
    families: dict[Literal["corner", "avoid", "cheapest", "accuracy"], float] = pydantic.Field(
        default_factory=lambda: {"corner": 0.4, "avoid": 0.2, "cheapest": 0.2, "accuracy": 0.2},
        description="sampler=paper: relative odds of each preference family.")
    min_models: int = pydantic.Field(2, ge=1, description="sampler=paper: fewest models offered per example.")
    reprice_share: float = pydantic.Field(
        0.8, ge=0, le=1, description="sampler=paper: share of examples whose models are repriced.")
    multiplier_range: tuple[float, float] = pydantic.Field(
        (0.25, 4.0), description="sampler=paper: range of the log-uniform price factors.")

    vary_models: bool = pydantic.Field(
        False, description="sampler=routerbench: also offer each example a random subset of at least `min_models` "
                           "models, repriced like the paper sampler's (`reprice_share`, `multiplier_range`); the "
                           "preference stays default or avoid-a-provider, so demonstrations differ only by what "
                           "is offered at what price.")
    vary_prices: bool = pydantic.Field(
        False, description="sampler=routerbench: reprice `reprice_share` of the examples (log-uniform factors in "
                           "`multiplier_range`) with every model still offered; `vary_models` implies it.")
    repriced_models: int | None = pydantic.Field(
        None, ge=1, description="sampler=routerbench: how many of the offered models a repriced example reprices, "
                                "drawn at random (None: every one). One at a time makes contrasting "
                                "demonstrations: the same prices but one, and the decision that one price changes.")
    new_model_share: float = pydantic.Field(
        0.0, ge=0, le=1, description="sampler=routerbench: share of examples in which 1 to `max_new_models` of the "
                                     "offered models (none of an avoided provider's) are introduced in the request as "
                                     "new, under the handles new1, new2, ... (`RouterBench.introduce`): the student "
                                     "learns to call a model by its introduction, which is how it meets a model "
                                     "never offered in training (`new_models` at evaluation).")
    max_new_models: int = pydantic.Field(3, ge=1, description="sampler=routerbench: most models introduced as new "
                                                              "in one example.")
    new_model_prices: tuple[float, float] = pydantic.Field(
        (1.0, 1.0), description="sampler=routerbench: range of the log-uniform price factors of the models an "
                                "example introduces as new (a known model at a price it was never offered at, so "
                                "introductions cover resemblances and prices no known model has).")

    @pydantic.field_validator("new_model_prices", "multiplier_range")
    @classmethod
    def _range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1]:
            raise ValueError("give (low, high) with 0 < low <= high")
        return value
    avoid_share: float = pydantic.Field(
        0.35, ge=0, le=1, description="Share of examples told to avoid one provider's models.")
    avoid_providers: list[str] = pydantic.Field(
        default_factory=lambda: ["anthropic", "mistral", "meta", "openai"],
        description="Providers an 'avoid' preference may name.")
    cost_weight: float = pydantic.Field(0.5, ge=0, le=1, description="p_cost of the default preference.")


class RecordedPrice(Strict):
    """A new price for one model's recorded answers: a factor on the recorded cost, or a flat $ per call."""

    factor: float | None = pydantic.Field(None, gt=0, description="Recorded cost x factor (same tokens, new price).")
    per_call_usd: float | None = pydantic.Field(None, ge=0, description="A flat price per call instead.")

    @pydantic.model_validator(mode="after")
    def _one(self) -> RecordedPrice:
        if (self.factor is None) == (self.per_call_usd is None):
            raise ValueError("give exactly one of factor or per_call_usd")
        return self


class Config(Strict):
    """RouterBench recorded outcomes: ask a model, see its recorded answer, pay its recorded cost."""

    name: Literal["routerbench"] = "routerbench"
    data: str | None = pydantic.Field(None, description="CSV file or folder (default: shared data routerbench/).")
    part: Literal["train", "dev", "all"] | None = pydantic.Field(
        None, description="Rows to use: train, dev (needs dev_fraction > 0) or all (default: dev when dev_fraction "
                          "is set, else all; training always uses train).")
    dev_fraction: float = pydantic.Field(0.0, ge=0, lt=1, description="Held-apart share of each task type.")
    seed: int = pydantic.Field(0, description="Split seed.")
    max_tasks: int | None = pydantic.Field(None, ge=1, description="Use at most this many training tasks.")
    preferences: PreferenceMix = pydantic.Field(default_factory=PreferenceMix,
                                                description="Training: how examples draw their preference.")
    recorded_prices: dict[str, RecordedPrice] = pydantic.Field(
        default_factory=dict, description="Evaluation under new prices: per model, a factor on its recorded cost or a "
                                          "flat $ per call (`recorded:` in an `orchestra eval --prices` file). The "
                                          "evaluated tasks are repriced and their prompts show the new prices; what "
                                          "was fit on the training part (baselines, demonstrations) is not.")
    train_models: list[str] | None = pydantic.Field(
        None, description="Training: offer only these models in training examples (default: all); the others are "
                          "unseen until an evaluation offers them (every model is described by training-part "
                          "statistics either way).")
    new_models: list[str] = pydantic.Field(
        default_factory=list, description="Evaluation: these models are left out of the price list and introduced in "
                                          "the request as new models new1, new2, ... in this order, each beside the "
                                          "listed model closest to it in training-part accuracy on the task's type, "
                                          "with its relative price (for an orchestrator trained with "
                                          "`preferences.new_model_share`).")
    calls: Literal["compact", "hermes"] = pydantic.Field(
        "compact", description="The dialect a trained orchestrator writes tool calls in: compact "
                               "(`ask(model=mixtral)`, a third of hermes' tokens; what the demo trains) or hermes.")
    describe_models: Literal["price", "accuracy"] = pydantic.Field(
        "price", description="What the compact prompt says of each model: its price, or its price and its "
                             "training-part accuracy on the task's type (what lets a model unseen in training be "
                             "judged by more than its price).")
    mark_price_changes: bool = pydantic.Field(
        False, description="The compact prompt's request says which models are priced away from their recorded "
                           "price and by how much (`Prices changed: gpt-4 5x cheaper.`): words beside the question, "
                           "which a small orchestrator learns to read where it does not learn to read a number in "
                           "the price list.")
    disagreement_share: float | None = pydantic.Field(
        0.5, ge=0, le=1, description="Training: share of consult demonstrations (and GRPO tasks) whose two consulted "
                                     "answers disagree, rebalanced (None: as sampled).")
    decision_temper: float | None = pydantic.Field(
        None, ge=0, le=1, description="Training: demonstrate each first decision (the first turn's calls) in "
                                      "proportion to its count to this power (0: every decision equally often; "
                                      "None: as sampled). Makes the decisions a changed price or an instruction "
                                      "calls for, rare among the demonstrations, frequent enough to learn.")
    temper_per_instruction: bool = pydantic.Field(
        False, description="Training, with decision_temper: temper each (instruction, first decision) pair rather "
                           "than each decision, so an instruction that changes nothing ('Avoid claude models.' "
                           "when no claude model is on the route) is shown as often as one that changes the "
                           "decision, and the student learns to read which provider is named, not that some is.")

    @pydantic.model_validator(mode="after")
    def _check(self) -> Config:
        if self.part == "dev" and not self.dev_fraction:
            raise ValueError("part dev needs dev_fraction > 0, the share of the rows held apart (`--dev-fraction` "
                             "in `orchestra eval`)")
        return self
