"""`orchestra demo-tools`: the learning result on multi-turn tool use, end to end and reproducible.

Steps (each kept when rerun: synthesized folders, trained stages and evaluations resume):
1. synthesize verified procedural tasks over the shared ToolScale domains (`orchestra.synth.procedural`), each
   domain split train/test by the generator;
2. SFT of SmolLM2-135M-Instruct (LoRA) on golden demonstrations of the train split of every domain but the held-out
   ones (the environments are `tau` folders in the training mixture, with a compact prompt);
3. GRPO with the paper's reward on the same mixture;
4. evaluate the untrained model (the same weights and prompt, saved as an orchestrator folder), the SFT start and
   SFT+GRPO, in solo mode with pass^1, on the tasks of the held-out domains (never trained on, so all of their tasks)
   and on τ² mock;
5. print the table and write `OUT/summary.json` and `OUT/results.md`.

Every size is in `ToolsPlan`; `--quick` runs the same pipeline with a tiny random model (a smoke test of every
stage, minutes). Environments are reached only through the registry, as in training and evaluation.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from orchestra.commands.train import with_progress

HELD_OUT = ("restaurant", "travel")


@dataclass(frozen=True)
class ToolsPlan:
    tasks: int
    """Procedural tasks synthesized over the 10 domains (the generator's split: 80% train)."""
    env: dict[str, Any]
    """Settings of every `tau` environment (observation cap, task length, turn limits)."""
    sft: dict[str, Any]
    grpo: dict[str, Any]
    eval_tasks: int
    """Tasks per evaluated environment (the first ones of each held-out domain, all of its splits)."""
    tiny: bool = False
    concurrency: int = 8
    """Episodes evaluated at once. Each holds its context's attention cache: with 32 at once the evaluation process
    grew past 14 GB and was killed for memory."""
    mock: dict[str, Any] = field(default_factory=dict)


FULL = ToolsPlan(
    tasks=500,
    env={"max_observation_chars": 700, "max_actions": 2, "max_turns": 4, "turn_tokens": 64},
    sft={"examples": 96, "examples_per_step": 8, "epochs": 1.5, "learning_rate": 2e-3, "warmup_steps": 2,
         "max_sequence_tokens": 1600, "lora": {"rank": 16, "top_layers": 10}, "checkpoint": {"every_steps": 10}},
    grpo={"steps": 4, "group_size": 6, "prompts_per_step": 2, "learning_rate": 5e-5, "kl_coef": 0.0,
          "temperature": 0.6, "lora": {"rank": 16, "top_layers": 10}, "checkpoint": {"every_steps": 2}},
    eval_tasks=24,
    mock={"max_observation_chars": 700, "max_turns": 4, "turn_tokens": 64},
)
QUICK = ToolsPlan(
    tasks=200,
    env={"max_observation_chars": 400, "max_actions": 2, "max_turns": 3, "turn_tokens": 32},
    sft={"examples": 32, "examples_per_step": 8, "epochs": 1, "learning_rate": 3e-3, "lora": {"rank": 0},
         "checkpoint": {"every_steps": 100}},
    grpo={"steps": 1, "group_size": 2, "prompts_per_step": 2, "lora": {"rank": 0}, "checkpoint": {"every_steps": 2}},
    eval_tasks=4,
    tiny=True,
    mock={"max_observation_chars": 400, "max_turns": 3, "turn_tokens": 32},
)


def demo_tools(
    quick: Annotated[bool, typer.Option("--quick", help="Tiny model, small sizes: a smoke test.")] = False,
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("runs/demo-tools"),
    domains: Annotated[Path | None, typer.Option(help="ToolScale domain folders (default: shared data).")] = None,
    held_out: Annotated[str, typer.Option(help="Comma-separated domains kept out of training.")] = ",".join(HELD_OUT),
    seed: Annotated[int, typer.Option(help="Seed of synthesis, sampling and training.")] = 0,
) -> None:
    from orchestra.errors import ConfigError
    from orchestra.paths import shared_data

    console = Console(width=None if Console().is_terminal else 120)
    plan = QUICK if quick else FULL
    started = time.perf_counter()
    timings: dict[str, float] = {}
    kept: list[str] = []
    """Stages this invocation found finished and kept (their time is not in this run's timings)."""
    try:
        source = domains or shared_data() / "toolscale_domains"
        synth_dir = _synthesize(console, source, out / "synth", plan, seed, kept)
        names = sorted(p.name for p in synth_dir.iterdir() if (p / "tasks.json").exists())
        held = [h.strip() for h in held_out.split(",") if h.strip()]
        unknown = sorted(set(held) - set(names))
        if unknown or not held:
            raise ConfigError(f"--held-out {held_out!r}: name domains among {', '.join(names)}")
        train_envs = [_tau(synth_dir / d, "train", plan.env) for d in names if d not in held]
        timings["synth_s"] = time.perf_counter() - started
        t = time.perf_counter()
        sft_dir, grpo_dir, untrained_dir = _train(console, out, train_envs, plan, seed, kept)
        timings["train_s"] = time.perf_counter() - t
        t = time.perf_counter()
        # A held-out domain was never trained on: every one of its tasks is a test task.
        eval_envs = {d: _tau(synth_dir / d, "all", {**plan.env, "max_tasks": plan.eval_tasks}) for d in held}
        eval_envs["tau-mock"] = {"name": "tau", "domain": "mock", "max_tasks": plan.eval_tasks, **plan.mock}
        policies = {"untrained": untrained_dir, "sft": sft_dir, "sft+grpo": grpo_dir}
        results = _evaluate(console, out / "runs", eval_envs, policies, plan, seed, kept)
        timings["eval_s"] = time.perf_counter() - t
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    timings["total_s"] = time.perf_counter() - started
    from orchestra.commands.demo_results import current_commit

    summary = {"held_out": held, "trained_on": [d for d in names if d not in held], "results": results,
               "timings_s": timings, "kept_stages": kept, "quick": quick, "commit": current_commit(), "plan": {"tasks": plan.tasks, "env": plan.env, "sft": plan.sft,
                                                              "grpo": plan.grpo, "eval_tasks": plan.eval_tasks}}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "results.md").write_text(results_markdown(summary))
    _print(console, summary)


def _tau(folder: Path, part: str, settings: dict[str, Any]) -> dict[str, Any]:
    return {"name": "tau", "path": str(folder), "part": part, **settings}


def _synthesize(console: Console, source: Path, out: Path, plan: ToolsPlan, seed: int, kept: list[str]) -> Path:
    from orchestra.synth.procedural import synthesize

    console.rule("[bold]1. Procedural tasks")
    if (out / "done").exists():
        console.print(f"kept {out}")
        kept.append("synth")
        return out
    results = synthesize(source, plan.tasks, seed, out)
    for r in results:
        console.print(f"{r.name}: {r.stats.get('tasks', '?')} tasks")
    (out / "done").write_text("")
    return out


def _train(console: Console, out: Path, envs: list[dict[str, Any]], plan: ToolsPlan, seed: int, kept: list[str]
           ) -> tuple[Path, Path, Path]:
    from orchestra.train.config import GRPOConfig, SFTConfig

    sft_cfg = SFTConfig.model_validate({**plan.sft, "envs": envs, "seed": seed, "output_dir": str(out / "sft")})
    grpo_cfg = GRPOConfig.model_validate({**plan.grpo, "envs": envs, "seed": seed, "output_dir": str(out / "grpo"),
                                          "model": {"kind": "local", "path": str(out / "sft" / "orchestrator")}})
    console.rule("[bold]2. SFT on golden demonstrations")
    backend = _tiny_backend(envs, seed) if plan.tiny else None
    untrained = out / "untrained"
    kept += [name for name, folder in (("sft", out / "sft" / "orchestrator"), ("grpo", out / "grpo" / "orchestrator"))
             if _done(folder)]
    if not _done(untrained):
        _save_untrained(sft_cfg, backend, untrained)
    if not _done(out / "sft" / "orchestrator"):
        from orchestra.train.sft import train_sft

        result = with_progress(console, "sft", None, "demonstrations + model",
                               lambda on_step: train_sft(sft_cfg, on_step=on_step, backend=backend))
        console.print(f"SFT: {result.steps} steps on {result.demonstrations} demonstrations "
                      f"({result.too_long} too long), final loss {result.final_loss:.3f}")
    console.rule("[bold]3. GRPO with the paper's reward")
    if not _done(out / "grpo" / "orchestrator"):
        from orchestra.train.grpo_trl import train_grpo

        result = with_progress(console, "grpo", grpo_cfg.steps, "rollouts",
                               lambda on_step: train_grpo(grpo_cfg, on_step=on_step))
        rewards = [h.get("reward", float("nan")) for h in result.history]
        console.print(f"GRPO: {result.steps} steps; reward per step {', '.join(f'{r:.3f}' for r in rewards)}")
    return out / "sft" / "orchestrator", out / "grpo" / "orchestrator", untrained


def _save_untrained(cfg: Any, backend: Any, folder: Path) -> None:
    """The starting weights as an orchestrator folder with the training prompt: the untrained baseline."""
    from orchestra.train.export import save_orchestrator
    from orchestra.train.mixture import load_mixture
    from orchestra.train.sft import load_policy_model, trained_meta

    backend = backend or load_policy_model(cfg.model, seed=cfg.seed)
    save_orchestrator(backend.lm, backend.tokenizer, folder, trained_meta(load_mixture(cfg.envs), "untrained"))


def _tiny_backend(envs: list[dict[str, Any]], seed: int) -> Any:
    """A tiny random Qwen3 model whose tokenizer is trained on the environments' prompts (quick mode)."""
    from orchestra.backends.local import LocalBackend
    from orchestra.backends.tiny import tiny_model, tiny_tokenizer
    from orchestra.envs.registry import load_suite

    corpus: list[str] = []
    for env in envs[:3]:
        suite = load_suite(env)
        corpus += [m.content for t in list(suite.tasks)[:20] for m in suite.prompt(t, [], None)]
    tokenizer = tiny_tokenizer(vocab_size=2048, extra_corpus=tuple(corpus))
    return LocalBackend(tiny_model(tokenizer, seed=seed, hidden_size=64, num_layers=2), tokenizer,
                        render_tools=False, seed=seed)


def _done(path: Path) -> bool:
    return (path / "orchestra.json").exists() and (path / "model.safetensors").exists()


def _evaluate(console: Console, out: Path, envs: dict[str, dict[str, Any]], policies: dict[str, Path],
              plan: ToolsPlan, seed: int, kept: list[str]) -> dict[str, dict[str, Any]]:
    from orchestra.backends.base import Sampling
    from orchestra.envs.registry import load_suite
    from orchestra.evaluate.commands import run_with_progress
    from orchestra.evaluate.spec import SpecContext, resolve_orchestrator
    from orchestra.preferences import Limits
    from orchestra.rollout.batch import EpisodeSettings

    console.rule("[bold]4. Evaluation (solo mode, pass^1)")
    results: dict[str, dict[str, Any]] = {}
    for env_name, env_cfg in envs.items():
        suite = load_suite(env_cfg)
        for label, folder in policies.items():
            if (out / env_name / label / "results.json").exists():
                kept.append(f"eval {env_name}/{label}")  # resumed: its stored items are not run again
            resolved = resolve_orchestrator(str(folder), SpecContext(suite, seed))
            settings = resolved.episode_settings(EpisodeSettings(
                limits=Limits(max_turns=suite.max_turns), sampling=Sampling(max_tokens=suite.turn_tokens, seed=seed)))
            run = asyncio.run(run_with_progress(
                suite.env, list(suite.tasks), resolved, out / env_name / label,
                config={"env": dict(suite.identity), "spec": label}, settings=settings,
                concurrency=plan.concurrency, show=False))
            results.setdefault(env_name, {})[label] = {
                "n": run["n"], "pass_at_1": run["accuracy"], "calls_per_task": run["calls"]["per_query"],
                "format_errors": run["format_errors"], "terminations": run["terminations"]}
            console.print(f"{env_name:12s} {label:10s} pass^1 {run['accuracy']:.3f}  ({run['n']} tasks, "
                          f"{run['calls']['per_query']:.2f} calls/task, {run['format_errors']} format errors)")
    return results


def results_markdown(summary: dict[str, Any]) -> str:
    """The results table as Markdown, from `summary.json` alone (docs copy it verbatim)."""
    labels = ("untrained", "sft", "sft+grpo")
    lines = ["| environment | tasks | " + " | ".join(f"{x} pass^1" for x in labels) + " |",
             "|---|---|" + "---|" * len(labels)]
    for env_name, runs in summary["results"].items():
        n = next(iter(runs.values()))["n"]
        lines.append(f"| {env_name} | {n} | " + " | ".join(f"{runs[x]['pass_at_1']:.3f}" for x in labels) + " |")
    minutes = summary["timings_s"]["total_s"] / 60
    lines.append("")
    kept = summary.get("kept_stages") or []
    lines.append(f"Trained on {', '.join(summary['trained_on'])}; held out: {', '.join(summary['held_out'])}. "
                 f"Run at commit {summary.get('commit', 'unknown')}: {minutes:.1f} min"
                 f"{' (quick: tiny random model)' if summary['quick'] else ''}"
                 + (f", after keeping the finished stages of an earlier invocation ({', '.join(kept)})" if kept else "")
                 + ".")
    return "\n".join(lines) + "\n"


def _print(console: Console, summary: dict[str, Any]) -> None:
    table = Table(title="multi-turn tool use: held-out domains and τ² mock (solo, pass^1)")
    for column in ("environment", "tasks", "untrained", "sft", "sft+grpo"):
        table.add_column(column, justify="left" if column == "environment" else "right")
    for env_name, runs in summary["results"].items():
        n = next(iter(runs.values()))["n"]
        table.add_row(env_name, str(n), *(f"{runs[x]['pass_at_1']:.3f}" for x in ("untrained", "sft", "sft+grpo")))
    console.print(table)
    console.print(f"total {summary['timings_s']['total_s'] / 60:.1f} min")
