"""`orchestra demo`: train a small orchestrator end to end on RouterBench and compare it with the baselines.

Steps (each resumes when rerun: finished stages are kept, evaluations resume item by item):
1. split RouterBench into a training part and a held-apart dev part (stratified, fixed seed);
2. SFT warm start of SmolLM2-135M-Instruct (LoRA) on consult-and-compare demonstrations with sampled preferences;
3. GRPO with the paper's reward;
4. evaluate on the dev part: the trained orchestrator (with and without "Avoid claude models."), its SFT-only start,
   and the baselines always:<each model>, cheapest, random, knn, cascade, oracle, and the demonstrations' own
   policy (teacher: what a perfect student would score);
5. print the table and the targets, write the HTML report with the Pareto plot, keep the orchestrator in
   `OUT/orchestrator/` (a directory `orchestra eval --orchestrator` accepts).
`--quick` runs the same pipeline with a tiny random model and small sizes (a smoke test of every stage).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from orchestra.commands.demo_results import (
    current_commit,
    paired_against,
    paper_reward_comparison,
    print_table,
    results_markdown,
    summarize,
)
from orchestra.commands.train import with_progress
from orchestra.envs.routerbench.config import TURN_TOKENS
from orchestra.train.config import GRPOConfig, SFTConfig

BASELINES = ("cheapest", "random", "knn", "cascade", "teacher", "oracle")
AVOID_PRESET = "avoid-claude"
"""The environment's preference preset the demo evaluates preference following with."""
TRAINING = {"decision_temper": 0.5, "temper_per_instruction": True}
"""The demo's training settings: each instruction's first decisions demonstrated in proportion to the square root of
their counts, so the routes avoid instructions call for are shown often enough to learn, and an avoid that changes
nothing as often as one that does (docs/demo.md measures both)."""


@dataclass(frozen=True)
class DemoPlan:
    dev_fraction: float
    sft: dict[str, Any]
    grpo: dict[str, Any]
    eval_limit: int | None
    tiny: bool


FULL = DemoPlan(
    dev_fraction=0.1,
    sft={"examples": 576, "examples_per_step": 8, "learning_rate": 2e-3, "warmup_steps": 2,
         "lora": {"rank": 16, "top_layers": 10}, "checkpoint": {"every_steps": 24}},
    grpo={"steps": 4, "group_size": 8, "prompts_per_step": 2, "learning_rate": 1e-4, "kl_coef": 0.0,
          "lora": {"rank": 16, "top_layers": 10}, "checkpoint": {"every_steps": 2}},
    eval_limit=None,
    tiny=False,
)
QUICK = DemoPlan(
    dev_fraction=0.1,
    sft={"examples": 480, "examples_per_step": 8, "epochs": 3, "learning_rate": 3e-3, "lora": {"rank": 0},
         "checkpoint": {"every_steps": 60}},
    grpo={"steps": 2, "group_size": 4, "prompts_per_step": 2, "learning_rate": 1e-4, "kl_coef": 0.0,
          "lora": {"rank": 0}, "checkpoint": {"every_steps": 2}},
    eval_limit=60,
    tiny=True,
)


def demo(
    quick: Annotated[bool, typer.Option("--quick", help="Tiny model, small sizes: a few minutes.")] = False,
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("runs/demo"),
    data: Annotated[str | None, typer.Option(help="RouterBench CSV or folder (default: shared data).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the split, sampling and training.")] = 0,
    compare_sft: Annotated[bool, typer.Option(help="Also evaluate the SFT-only start (one more dev pass).")] = False,
    train_seed: Annotated[int | None, typer.Option(help="Seed of sampling and training only (default: --seed); "
                                                         "the split stays --seed's.")] = None,
) -> None:
    console = Console(width=None if Console().is_terminal else 120)
    plan = QUICK if quick else FULL
    started = time.perf_counter()
    timings: dict[str, float] = {}
    env_cfg = {"name": "routerbench", "data": data, "dev_fraction": plan.dev_fraction, "seed": seed}

    trained = seed if train_seed is None else train_seed
    train_env = {**env_cfg, **TRAINING}
    sft_cfg = SFTConfig.model_validate({**plan.sft, "envs": [train_env], "seed": trained,
                                        "output_dir": str(out / "sft")})
    grpo_cfg = GRPOConfig.model_validate({
        **plan.grpo, "envs": [train_env], "seed": trained, "output_dir": str(out / "grpo"),
        "model": {"kind": "local", "path": str(out / "sft" / "orchestrator")}})

    console.rule("[bold]1. SFT warm start")
    timings["sft_s"] = training_stage(console, out / "sft" / "orchestrator", lambda: _run_sft(console, sft_cfg, plan))

    console.rule("[bold]2. GRPO with the paper's reward")
    t = time.perf_counter()
    training_stage(console, out / "grpo" / "orchestrator", lambda: _run_grpo(console, grpo_cfg))
    final = out / "orchestrator"
    if not _done(final):
        shutil.copytree(out / "grpo" / "orchestrator", final, dirs_exist_ok=True)
    timings["grpo_s"] = time.perf_counter() - t

    console.rule("[bold]3. Evaluation on the dev part")
    t = time.perf_counter()
    runs, presets = _evaluate_all(console, out, final, env_cfg, plan, seed, compare_sft)
    timings["eval_s"] = time.perf_counter() - t

    console.rule("[bold]4. Results")
    from orchestra.evaluate.report_files import write_report

    report = write_report([p for p, _ in runs.values()], out / "report", title="orchestra demo: RouterBench dev part")
    summary = summarize(runs)
    summary["paired"] = paired_against(runs, "orchestra", ("teacher", "cascade", "knn", summary["best_single"]))
    if "sft" in runs:
        summary["paper_reward"] = paper_reward_comparison(runs, ("untrained", "sft", "orchestra"),
                                                          presets["default"])
    summary["timings_s"] = {**timings, "total_s": time.perf_counter() - started}
    summary["quick"] = quick
    summary["seeds"] = {"split": seed, "training": trained}
    summary["commit"] = current_commit()
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "results.md").write_text(results_markdown(summary))
    print_table(console, runs, summary)
    console.print(f"report: {report[1]}\norchestrator: {final}\ntotal {summary['timings_s']['total_s'] / 60:.1f} min")


def training_stage(console: Console, folder: Path, train: Callable[[], None]) -> float:
    """Run `train` unless `folder` already holds its finished orchestrator (then keep it); the seconds it took."""
    t = time.perf_counter()
    if not _done(folder):
        train()
    else:
        console.print(f"kept {folder}")
    return time.perf_counter() - t


def _done(path: Path) -> bool:
    return (path / "orchestra.json").exists() and (path / "model.safetensors").exists()


def _run_sft(console: Console, cfg: SFTConfig, plan: DemoPlan) -> None:
    from orchestra.train.sft import train_sft

    backend = _tiny_backend(cfg) if plan.tiny else None
    result = with_progress(console, "sft", None, "demonstrations + model",
                           lambda on_step: train_sft(cfg, on_step=on_step, backend=backend))
    console.print(f"SFT: {result.steps} steps on {result.demonstrations} demonstrations, final loss "
                  f"{result.final_loss:.3f}")


def _run_grpo(console: Console, cfg: GRPOConfig) -> None:
    from orchestra.train.grpo_trl import train_grpo

    result = with_progress(console, "grpo", cfg.steps, "rollouts",
                           lambda on_step: train_grpo(cfg, on_step=on_step))
    first, last = result.history[0] if result.history else {}, result.history[-1] if result.history else {}
    console.print(f"GRPO: {result.steps} steps; reward {first.get('reward', float('nan')):.3f} -> "
                  f"{last.get('reward', float('nan')):.3f}, accuracy {first.get('accuracy', float('nan')):.2f} -> "
                  f"{last.get('accuracy', float('nan')):.2f}")


def _tiny_backend(cfg: SFTConfig) -> Any:
    """A tiny random Qwen3 model whose tokenizer is trained on the task's prompts (quick mode)."""
    from orchestra.backends.local import LocalBackend
    from orchestra.backends.tiny import tiny_model, tiny_tokenizer
    from orchestra.envs.registry import load_suite
    from orchestra.toolcalls import render_call

    suite = load_suite(cfg.envs[0].config)
    corpus = tuple(m.content for t in suite.training_env.tasks()[:200] for m in suite.prompt(t, [], None))
    corpus += (render_call("ask", {"model": "yi-34b"}, suite.calls),) * 20
    tokenizer = tiny_tokenizer(vocab_size=2048, extra_corpus=corpus)
    return LocalBackend(tiny_model(tokenizer, seed=cfg.seed, hidden_size=128, num_layers=2), tokenizer,
                        render_tools=False, seed=cfg.seed)


def _evaluate_all(console: Console, out: Path, final: Path, env_cfg: dict[str, Any], plan: DemoPlan,
                  seed: int, compare_sft: bool) -> tuple[dict[str, tuple[Path, dict[str, Any]]], dict[str, Any]]:
    from orchestra.envs.registry import load_suite
    from orchestra.evaluate.spec import SpecContext

    suite = load_suite(env_cfg, part="dev")
    tasks = dev_tasks(suite, plan.eval_limit)
    ctx = SpecContext(suite, seed)
    avoid = suite.preference_presets[AVOID_PRESET]
    specs: list[tuple[str, str, Any]] = [(f"always:{m}", f"always:{m}", None) for m in suite.models]
    specs += [(b, b, None) for b in BASELINES]
    usual = suite.preference_presets["default"]  # what it was trained under when no avoidance was asked
    if compare_sft:
        specs.append(("untrained", "prompted:local", usual))
        specs.append(("sft", str(out / "sft" / "orchestrator"), usual))
    specs += [("orchestra", str(final), usual), ("orchestra+avoid-claude", str(final), avoid)]
    runs: dict[str, tuple[Path, dict[str, Any]]] = {}
    for label, spec, prefs in specs:
        reuse = out / "runs" / "orchestra" if label == "orchestra+avoid-claude" else None
        # The untrained model writes hermes calls (the default prompt shows them): it gets hermes' turn budget.
        tokens = TURN_TOKENS["hermes"] if label == "untrained" else None
        runs[label] = evaluate_spec(console, suite, tasks, ctx, label, spec, prefs, out / "runs", reuse=reuse,
                                    limit=plan.eval_limit, max_tokens=tokens,
                                    show=label in ("untrained", "sft", "orchestra", "orchestra+avoid-claude"))
    return runs, dict(suite.preference_presets)


def dev_tasks(suite: Any, limit: int | None) -> list[Any]:
    """The suite's tasks, or an even subsample of `limit` of them (which keeps the task-type mix)."""
    tasks = list(suite.tasks)
    if limit and limit < len(tasks):
        stride = len(tasks) / limit
        tasks = [tasks[int(i * stride)] for i in range(limit)]
    return tasks


def evaluate_spec(console: Console, suite: Any, tasks: list[Any], ctx: Any, label: str, spec: str, prefs: Any,
                  runs_dir: Path, *, reuse: Path | None = None, limit: int | None = None,
                  show: bool = False, max_tokens: int | None = None) -> tuple[Path, dict[str, Any]]:
    """Evaluate one orchestrator spec under `prefs` into `runs_dir/<label>` (resumable item by item), each turn
    writing at most `max_tokens` (default: the environment's turn budget; a trained orchestrator's own wins).

    `reuse`: a run of the same orchestrator without the preference, whose episodes that never called a model the
    preference rules out are taken as they are (the preference cannot have changed them)."""
    from orchestra.backends.base import Sampling
    from orchestra.evaluate.commands import run_with_progress, slug
    from orchestra.evaluate.run import preferences_to_dict
    from orchestra.evaluate.spec import resolve_orchestrator
    from orchestra.evaluate.store import read_items
    from orchestra.preferences import Limits
    from orchestra.rollout.batch import EpisodeSettings

    resolved = resolve_orchestrator(spec, ctx)
    settings = resolved.episode_settings(EpisodeSettings(preferences=prefs, limits=Limits(max_turns=4),
                                                         sampling=Sampling(
                                                             max_tokens=max_tokens or suite.turn_tokens)))
    config = {"env": dict(suite.identity), "spec": spec, "label": label,
              "preferences": preferences_to_dict(prefs), "limit": limit}
    if max_tokens:  # part of what the run is (runs made with the environment's budget keep their identity)
        config["max_tokens"] = max_tokens
    run_dir = runs_dir / slug(label)
    base_records = read_items(reuse / "items.jsonl") if reuse is not None else None
    results = asyncio.run(run_with_progress(suite.env, tasks, resolved, run_dir, config=config, settings=settings,
                                            concurrency=64, base_records=base_records, show=show))
    console.print(f"{label:24s} accuracy {results['accuracy']:.3f}  ${results['cost_per_query_usd']:.6f}/query")
    return run_dir, results
