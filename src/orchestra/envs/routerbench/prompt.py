"""The compact RouterBench prompt a trained small orchestrator reads: model prices, the task type, the question cut
short, the preference instruction."""

from __future__ import annotations

import re
from collections.abc import Sequence

from orchestra.task import Task
from orchestra.types import Message

COMPACT_INSTRUCTIONS = "ask(model) shows a model's answer; answer(model) makes that answer final. $ per 1k queries:"
ACCURACY_INSTRUCTIONS = ("ask(model) shows a model's answer; answer(model) makes that answer final. $ per 1k queries, "
                         "% right on this task type:")
"""With `describe_models: accuracy`: each model's price and its training-part accuracy on the task's type, so a
model never seen in training is described by more than its price."""
COMPACT_STEM_CHARS = 120
COMPACT_OPTION_CHARS = 32


def compact_prompt(task: Task, specs: Sequence[object], preferences: object | None) -> list[Message]:
    """A short prompt for small orchestrators: the models with their mean prices (and, when the task carries them,
    their training-part accuracy on its type), the task type, the question cut short (stem to 120 characters, each
    option to 32), and the preference instruction.

    Models introduced as new (`RouterBench.introduce`) are not in the list; the request introduces them, each beside
    a listed model it resembles ("New models: new1 like mixtral (78% vs 80%), 0.5x its price.").
    With `mark_price_changes`, the request also says which models are priced away from their recorded price and by
    how much ("Prices changed: gpt-4 5x cheaper."), beside the question and the preference, where a small orchestrator
    reads its instructions: a student trained on 576 demonstrations was measured not to react to the same marks in
    the price list of the system message, nor to the numbers alone.
    The tools' schemas are not rendered (a trained small orchestrator knows them); the price list is what it needs to
    trade accuracy for cost. Prices are the mean recorded cost per query on the training part
    (`Task.metadata["prices_per_1k"]`). Every token here is paid on every turn of every rollout, hence the cuts.
    """
    prices = task.metadata.get("prices_per_1k", {})
    accuracy = task.metadata.get("accuracy_on_type")
    if accuracy is None:
        head, listing = COMPACT_INSTRUCTIONS, ", ".join(f"{m} {p:.2g}" for m, p in prices.items())
    else:
        head = ACCURACY_INSTRUCTIONS
        listing = ", ".join(f"{m} {p:.2g} {accuracy.get(m, 0)}%" for m, p in prices.items())
    user = shorten_question(task.prompt)
    changes = {m: f for m, f in task.metadata.get("price_changes", {}).items() if m in prices}
    if changes:
        user += "\nPrices changed: " + ", ".join(f"{m} {price_change(f)}" for m, f in changes.items()) + "."
    new = task.metadata.get("new_models")
    if new:
        user += "\nNew models: " + "; ".join(introduction(m, *d) for m, d in new.items()) + "."
    describe = getattr(preferences, "describe", None)
    if describe is not None and describe():
        user += "\n" + describe()
    return [Message("system", f"{head} {listing}"), Message("user", user)]


def introduction(name: str, like: str, accuracy: int, like_accuracy: int, price_ratio: float) -> str:
    """How the request introduces a new model: beside the listed model closest to it in accuracy on the task's
    type, with both accuracies and its price relative to that model's ("new1 like mixtral (78% vs 80%), 0.5x its
    price"): words a small orchestrator compares with a model it knows, not a number to rank in the list."""
    return f"{name} like {like} ({accuracy}% vs {like_accuracy}%), {price_ratio:.2g}x its price"


def price_change(factor: float) -> str:
    """How a price compares with the recorded one, as the prompt writes it: "5x cheaper", "10x dearer"."""
    return f"{factor:.2g}x dearer" if factor >= 1 else f"{1 / factor:.2g}x cheaper"


def shorten_question(prompt: str) -> str:
    """`prompt` with the question stem and each multiple-choice option cut short."""
    lines = prompt.splitlines()
    options = [i for i, line in enumerate(lines) if re.match(r"^[A-E]\) ", line)]
    head = lines[: options[0]] if options else lines
    stem = "\n".join(head)
    if len(stem) > COMPACT_STEM_CHARS:
        stem = stem[:COMPACT_STEM_CHARS].rstrip() + "..."
    cut = [lines[i][:COMPACT_OPTION_CHARS] for i in options]
    return "\n".join([stem, *cut])
