"""`orchestra demo-generalize`: what a router fit once cannot do, measured on the RouterBench dev part.

1. Unseen prices. The dev part is evaluated under repricings no policy was fit on (`REPRICINGS`: gpt-4 at one fifth
   of its price, mixtral ten times dearer). The orchestrators read the new prices in their prompt; the cascade and
   the kNN router stay as they were fit on the training part's recorded prices, and pay the new ones.
   Three orchestrators: the demo's (`make demo`, trained at the recorded prices), one trained with the paper's
   price randomization (`sampler: paper`: per example a random subset of the models, prices scaled by log-uniform
   factors, a preference family), and one trained on one price change at a time (`PRICED`: every model offered,
   one of them repriced by a log-uniform factor in 0.1-10x, the change said in the request, demonstrations
   tempered across decisions), the last two trained here with the demo's SFT settings (SFT only).
2. Unseen models: an orchestrator trained (SFT, the demo's settings) with `UNSEEN` never offered is evaluated with
   all 11, each described by its training-part price: does it call the unseen ones where they pay off? Compared
   with the demo's orchestrator, trained with all 11.
   Then both at once, with descriptions that say what a model is good for (`DESCRIBED`): `UNSEEN` never offered,
   every example offering a random subset of the other 8 at random prices (`vary_models`), each model listed with
   its price and its training-part accuracy on the task's type (`describe_models: accuracy`); evaluated in both
   tables with all 11 offered.
   Then models introduced in the request (`NEW`): `UNSEEN` never offered, and in half the training examples 1-3 of
   the offered models left out of the price list and introduced as new under the handles new1, new2, ..., beside the
   listed model closest to each in accuracy ("New models: new1 like mixtral (84% vs 85%), 0.6x its price."), the
   model behind a handle changing from example to example, each introduced model repriced by a log-uniform factor in
   0.1-10x, on twice the demo's demonstrations; evaluated at recorded prices with the `UNSEEN` models introduced so.
   Beside them, the demonstrations' own policy (the `teacher` baseline, what a perfect student would score): with
   all 11 models, with the 8 training ones only, and with `UNSEEN` introduced (planned from their introductions),
   so the table says whether the unseen models pay off, not only whether a student calls them.
3. Preference following per provider: the demo's orchestrator told to avoid each provider's models in turn (the
   four its training drew avoid-instructions for): accuracy, cost, the share of calls still made to the avoided
   provider, and the accuracy lost against no instruction.

Every stage resumes when rerun (a finished training is kept; evaluations resume item by item). Writes
OUT/summary.json and OUT/results.md (the tables, rendered from the summary alone, which docs quote verbatim).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from orchestra.commands.demo import (
    FULL,
    QUICK,
    _done,
    _run_sft,
    dev_tasks,
    evaluate_spec,
    training_stage,
)
from orchestra.commands.demo_results import current_commit, run_footer
from orchestra.errors import ConfigError
from orchestra.train.config import SFTConfig

REPRICINGS: dict[str, dict[str, dict[str, float]]] = {
    "recorded prices": {},
    "gpt-4 at 1/5 of its price": {"gpt-4": {"factor": 0.2}},
    "mixtral 10x dearer": {"mixtral": {"factor": 10.0}},
}
"""Price settings of the unseen-pricing table: per model, a factor on its recorded cost (`recorded_prices`)."""
UNSEEN = ("yi-34b", "claude-instant", "codellama-34b")
"""Models held out of the unseen-models training: yi-34b is the cheap model the demonstrations lean on most."""
AVOIDED = {"claude": "anthropic", "gpt": "openai", "mistral": "mistral", "llama": "meta"}
"""The avoid presets evaluated (preset `avoid-<key>`) and the provider each rules out."""
DESCRIBED = {"describe_models": "accuracy",
             "preferences": {"vary_models": True, "min_models": 3, "multiplier_range": [0.1, 10.0]}}
"""The described orchestrator's environment settings (beside `train_models` without `UNSEEN`): prices in training
span 0.1-10x, so the evaluated repricings are unseen price lists within the trained range, not extrapolation."""
PRICED = {"preferences": {"vary_prices": True, "repriced_models": 1, "multiplier_range": [0.1, 10.0]},
          "decision_temper": 0.5, "mark_price_changes": True}
"""The price-change orchestrator's environment settings: one model repriced per example (80% of them) so that
demonstrations contrast one price at a time; the change said in the request ("Prices changed: gpt-4 5x cheaper."),
which a student reads where it does not read the price list; decisions tempered (count^0.5) so that the ones a price
change calls for (answer gpt-4 outright) are not drowned by the usual ones. The evaluated repricings are single
changes of this kind, at factors no example drew exactly."""
NEW = {"preferences": {"new_model_share": 0.5, "new_model_prices": [0.1, 10.0]}, "decision_temper": 0.5}
"""The introduced-models orchestrator's environment settings (beside `train_models` without `UNSEEN`): it calls a
model by a handle it was taught to call by introduction, the models behind the handles changing from example to
example, each at a price factor in 0.1-10x (at their own prices the introduced models resembled only what known
models resemble, and a model like claude-1 at a tenth of its price, as yi-34b is introduced, was never seen);
decisions tempered as the demo's, so "consult the new model" is not drowned."""
NEW_EXAMPLES_SCALE = 2
"""The introduced-models orchestrator trains on twice the demo's demonstrations (1,152): with the demo's 576 it
never called an introduced model on the dev part (docs/demo.md)."""
PRICE_POLICIES = ("always:gpt-4", "cascade", "knn", "orchestra", "orchestra-paper", "orchestra-priced",
                  "orchestra-described")
LABELS = {"always:gpt-4": "always gpt-4", "cascade": "cascade (fit at recorded prices)",
          "knn": "knn router (fit at recorded prices)", "orchestra": "orchestra (demo: trained at recorded prices)",
          "orchestra-paper": "orchestra (trained with price randomization, SFT)",
          "orchestra-priced": "orchestra (SFT, one price changed at a time, the change said in the request)",
          "orchestra-unseen": "orchestra (SFT with yi-34b, claude-instant, codellama-34b never offered)",
          "orchestra-described": "orchestra (SFT, those 3 never offered, random offers and prices, models described "
                                 "by accuracy)",
          "orchestra-new": "orchestra (SFT, those 3 never offered, offered models introduced as new under handles; "
                           "evaluated with the 3 introduced as new)",
          "teacher": "teacher (the demonstrations' policy), all 11 known",
          "teacher-seen": "teacher over the 8 training models only",
          "teacher-new": "teacher with the 3 introduced as new, planned from their introductions"}
UNSEEN_ROWS = ("teacher", "orchestra", "teacher-seen", "orchestra-unseen", "orchestra-described", "teacher-new",
               "orchestra-new")
"""The unseen-models table's rows (at recorded prices), each teacher row above the students it bounds."""


def demo_generalize(
    orchestrator: Annotated[Path, typer.Option(help="The demo's orchestrator folder (make demo writes it).")] = Path(
        "runs/demo/orchestrator"),
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("runs/demo-generalize"),
    data: Annotated[str | None, typer.Option(help="RouterBench CSV or folder (default: shared data).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split (the demo's), sampling and training.")] = 0,
    quick: Annotated[bool, typer.Option("--quick", help="Tiny random model, 60 dev rows: a smoke test.")] = False,
) -> None:
    console = Console(width=None if Console().is_terminal else 120)
    if not _done(orchestrator):
        raise ConfigError(f"--orchestrator {orchestrator}: no trained orchestrator there (orchestra.json and "
                          "model.safetensors); run `make demo` first or pass the folder of one")
    plan = QUICK if quick else FULL
    started = time.perf_counter()
    env_cfg: dict[str, Any] = {"name": "routerbench", "data": data, "dev_fraction": plan.dev_fraction, "seed": seed}

    console.rule("[bold]1. SFT with the paper's price randomization")
    paper = out / "paper" / "sft" / "orchestrator"
    paper_env = {**env_cfg, "preferences": {"sampler": "paper"}}
    timings = {"sft_paper_s": training_stage(console, paper, lambda: _sft(console, plan, paper_env, seed, paper))}

    console.rule("[bold]1b. SFT with one price changed at a time, the change said in the request")
    priced = out / "priced" / "sft" / "orchestrator"
    timings["sft_priced_s"] = training_stage(console, priced, lambda: _sft(
        console, plan, {**env_cfg, **PRICED}, seed, priced))

    console.rule("[bold]2. SFT with three models never offered")
    from orchestra.envs.routerbench.data import ALIASES

    unseen = out / "unseen" / "sft" / "orchestrator"
    seen = [m for m in ALIASES.values() if m not in UNSEEN]
    seen_env = {**env_cfg, "train_models": seen}
    timings["sft_unseen_s"] = training_stage(console, unseen, lambda: _sft(console, plan, seen_env, seed, unseen))

    console.rule("[bold]3. SFT with three models never offered, random offers, models described by accuracy")
    described = out / "described" / "sft" / "orchestrator"
    described_env = {**seen_env, **DESCRIBED}
    timings["sft_described_s"] = training_stage(console, described, lambda: _sft(
        console, plan, described_env, seed, described))

    console.rule("[bold]3b. SFT with three models never offered, offered models introduced as new")
    new = out / "new" / "sft" / "orchestrator"
    timings["sft_new_s"] = training_stage(console, new, lambda: _sft(
        console, plan, {**seen_env, **NEW}, seed, new, examples_scale=NEW_EXAMPLES_SCALE))

    console.rule("[bold]4. Unseen prices and unseen models")
    t = time.perf_counter()
    specs = {"always:gpt-4": "always:gpt-4", "cascade": "cascade", "knn": "knn", "orchestra": str(orchestrator),
             "orchestra-paper": str(paper), "orchestra-priced": str(priced), "orchestra-unseen": str(unseen),
             "orchestra-described": str(described), "orchestra-new": str(new), "teacher": "teacher",
             "teacher-seen": "teacher:" + ",".join(seen), "teacher-new": "teacher"}
    prices = {name: _evaluate_prices(console, out, env_cfg, factors, specs, plan, seed)
              for name, factors in REPRICINGS.items()}
    timings["prices_s"] = time.perf_counter() - t

    console.rule("[bold]5. Avoiding each provider")
    t = time.perf_counter()
    avoid = _evaluate_avoid(console, out, env_cfg, str(orchestrator), plan, seed)
    timings["avoid_s"] = time.perf_counter() - t

    summary = {"prices": prices, "avoid": avoid, "repricings": REPRICINGS, "unseen_models": list(UNSEEN), "quick": quick,
               "timings_s": {**timings, "total_s": time.perf_counter() - started}, "commit": current_commit()}
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "results.md").write_text(results_markdown(summary))
    console.print(results_markdown(summary), markup=False)


def _sft(console: Console, plan: Any, env: dict[str, Any], seed: int, orchestrator: Path,
         examples_scale: int = 1) -> None:
    """The demo's SFT settings on `env` (`examples_scale` times its demonstrations), its orchestrator written to
    `orchestrator`."""
    cfg = SFTConfig.model_validate({**plan.sft, "examples": plan.sft["examples"] * examples_scale, "envs": [env],
                                    "seed": seed, "output_dir": str(orchestrator.parent)})
    _run_sft(console, cfg, plan)


def _evaluate_prices(console: Console, out: Path, env_cfg: dict[str, Any], factors: dict[str, Any],
                     specs: dict[str, str], plan: Any, seed: int) -> dict[str, Any]:
    from orchestra.envs.registry import load_suite
    from orchestra.evaluate.spec import SpecContext

    plain = load_suite({**env_cfg, "recorded_prices": factors}, part="dev")
    own = {"orchestra-described": load_suite({**env_cfg, "recorded_prices": factors, "describe_models": "accuracy"},
                                             part="dev"),
           "orchestra-priced": load_suite({**env_cfg, "recorded_prices": factors, "mark_price_changes": True},
                                          part="dev")}
    if not factors:
        own["orchestra-new"] = own["teacher-new"] = load_suite({**env_cfg, "new_models": list(UNSEEN)}, part="dev")
    runs_dir = out / "runs" / _folder(next(k for k, v in REPRICINGS.items() if v == factors))
    table = {}
    labels = PRICE_POLICIES + (tuple(r for r in UNSEEN_ROWS if r not in PRICE_POLICIES) if not factors else ())
    for label in labels:
        suite = own.get(label, plain)  # the prompt it was trained with
        tasks, ctx = dev_tasks(suite, plan.eval_limit), SpecContext(suite, seed)
        prefs = suite.preference_presets["default"] if label.startswith("orchestra") else None
        _, r = evaluate_spec(console, suite, tasks, ctx, label, specs[label], prefs, runs_dir, limit=plan.eval_limit)
        table[label] = {"accuracy": r["accuracy"], "cost_per_query_usd": r["cost_per_query_usd"],
                        "calls": r.get("calls", {}).get("share", {})}
    return table


def _evaluate_avoid(console: Console, out: Path, env_cfg: dict[str, Any], orchestrator: str, plan: Any,
                    seed: int) -> dict[str, Any]:
    from orchestra.envs.registry import load_suite
    from orchestra.envs.routerbench.data import PROVIDERS
    from orchestra.evaluate.spec import SpecContext

    suite = load_suite(env_cfg, part="dev")
    tasks, ctx = dev_tasks(suite, plan.eval_limit), SpecContext(suite, seed)
    base = out / "runs" / _folder("recorded prices") / "orchestra"
    rows = {}
    for key, provider in AVOIDED.items():
        _, r = evaluate_spec(console, suite, tasks, ctx, f"avoid-{key}", orchestrator,
                             suite.preference_presets[f"avoid-{key}"], out / "runs" / "avoid", reuse=base,
                             limit=plan.eval_limit)
        shares = r.get("calls", {}).get("share", {})
        rows[key] = {"provider": provider, "accuracy": r["accuracy"], "cost_per_query_usd": r["cost_per_query_usd"],
                     "avoided_share": sum(v for m, v in shares.items() if PROVIDERS.get(m) == provider),
                     "calls": shares}
    return rows


def _folder(setting: str) -> str:
    """The run folder of a price setting: its name with every run of other characters as one underscore."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", setting).strip("_")


def results_markdown(summary: dict[str, Any]) -> str:
    """The two tables of one run, from its summary.json alone (docs/demo.md quotes them verbatim; a test checks
    the committed copy against the committed summary)."""
    prices = summary["prices"]
    settings = list(prices)
    lines = ["| policy | " + " | ".join(f"{s}: accuracy, $/query" for s in settings) + " |",
             "|---|" + "---|" * len(settings)]
    for label in (p for p in PRICE_POLICIES if p in prices[settings[0]]):
        cells = [f"{prices[s][label]['accuracy']:.3f}, {prices[s][label]['cost_per_query_usd']:.6f}"
                 for s in settings]
        lines.append(f"| {LABELS[label]} | " + " | ".join(cells) + " |")
    lines += ["", "Share of calls per model (orchestrators):", ""]
    for label in (p for p in ("orchestra", "orchestra-paper", "orchestra-priced", "orchestra-described")
                  if p in prices[settings[0]]):
        for s in settings:
            top = sorted(prices[s][label]["calls"].items(), key=lambda kv: -kv[1])[:4]
            lines.append(f"- {LABELS[label]}, {s}: " + ", ".join(f"{m} {v:.0%}" for m, v in top))
    unseen = set(summary["unseen_models"])
    lines += ["", "| recorded prices, all 11 models offered | accuracy | $/query | calls to " +
              ", ".join(sorted(unseen)) + " |", "|---|---|---|---|"]
    for label in (p for p in UNSEEN_ROWS if p in prices[settings[0]]):
        r = prices[settings[0]][label]
        share = sum(v for m, v in r["calls"].items() if m in unseen)
        lines.append(f"| {LABELS[label]} | {r['accuracy']:.3f} | {r['cost_per_query_usd']:.6f} | {share:.0%} |")
    base = prices[settings[0]]["orchestra"]["accuracy"]
    lines += ["", "| instruction | accuracy | change (points) | $/query | calls to the avoided provider |",
              "|---|---|---|---|---|", f"| none | {base:.3f} | | "
              f"{prices[settings[0]]['orchestra']['cost_per_query_usd']:.6f} | |"]
    from orchestra.envs.routerbench.training import PROVIDER_LABELS

    for r in summary["avoid"].values():
        instruction = f"Avoid {PROVIDER_LABELS.get(r['provider'], r['provider'])} models."  # as the preset says it
        lines.append(f'| "{instruction}" | {r["accuracy"]:.3f} | {100 * (r["accuracy"] - base):+.1f} | '
                     f'{r["cost_per_query_usd"]:.6f} | {r["avoided_share"]:.0%} |')
    return "\n".join([*lines, "", run_footer(summary)]) + "\n"
