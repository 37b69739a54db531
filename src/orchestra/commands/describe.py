"""`orchestra describe`: a model-tool's capability description written from its own trajectories (paper 3.1;
REFERENCE.md section 5).

Steps: sample `--tasks` tasks of the environment (seeded; all of them when it has fewer), run the model on each as
the solver (the environment's own prompt, tools, observation format and turn cap; no pool tools, so the trajectory
shows what the model itself can do), grade them; then the describer model reads the tasks, what the model did
(calls, answer, how the episode ended) and pass/fail, and writes a capability description: strengths and weaknesses
by domain. The description is printed; with `--write OUT.yaml` it becomes the `description` of the pool entries that
use the model (an `experts:` alias or a `tools:` entry named NAME, else every expert entry whose model is NAME),
and the pool, checked against its schema, is written to OUT.yaml (YAML comments are not kept).

Models are named as in the pool (an expert alias, a tool name, a model name, or the orchestrator's model); the
describer defaults to the pool's orchestrator. Gold answers are never shown to the describer.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from orchestra.backends.base import ChatBackend, Sampling
from orchestra.backends.pricing import PriceTable
from orchestra.config import ModelEndpoint, PoolConfig, describe_validation
from orchestra.errors import BackendError, ConfigError
from orchestra.preferences import Limits
from orchestra.rollout.batch import EpisodeResult, EpisodeSettings, run_many
from orchestra.task import Task
from orchestra.toolcalls import strip_think
from orchestra.types import Message

MAX_TASK_CHARS = 800
MAX_ANSWER_CHARS = 300
DESCRIBER_MAX_TOKENS = 400
INSTRUCTION = (
    "Above are tasks that the model `{name}` attempted on its own, with what it did and whether it passed. Write the "
    "capability description an orchestrator will read when deciding whether to call `{name}`: its strengths and its "
    "weaknesses by domain or type of task, concretely, in at most 120 words of plain text. Do not restate the tasks.")


def describe(
    model: Annotated[str, typer.Option("--model", help="The model to describe: an expert alias, tool or model name "
                                                        "of the pool.")],
    env: Annotated[str, typer.Option("--env", help="Environment whose tasks the model runs (see `orchestra env`).")],
    tasks: Annotated[int, typer.Option("--tasks", min=1, help="Tasks sampled (the paper: 10).")] = 10,
    describer: Annotated[str | None, typer.Option(
        "--describer", help="The model that writes the description (default: the pool's orchestrator).")] = None,
    pool: Annotated[Path | None, typer.Option("--pool", help="Pool YAML (default: the bundled pool).")] = None,
    write: Annotated[Path | None, typer.Option(
        "--write", help="Write the pool with the description set on the model's entries to this YAML file.")] = None,
    data: Annotated[str | None, typer.Option("--data", help="The environment's data file or folder.")] = None,
    env_set: Annotated[list[str] | None, typer.Option("--env-set", help="Environment option KEY=VALUE.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the task sample.")] = 0,
    max_turns: Annotated[int | None, typer.Option(help="Turn cap per episode (default: the environment's).")] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Episodes in flight.")] = 4,
) -> None:
    """Run a model on sampled tasks and have a describer model write its capability description."""
    from orchestra.envs.registry import load_suite
    from orchestra.evaluate.commands import env_options
    from orchestra.pool import default_pool_path, make_backend

    pool_path = pool or default_pool_path()
    raw, config = _read_pool(pool_path)
    table = PriceTable.default().with_overrides(config.prices.as_overrides() or None)
    endpoint, entries = resolve_model(config, model)
    describer_endpoint, _ = resolve_model(config, describer) if describer else (config.orchestrator, [])
    if write is not None and not entries:
        raise ConfigError(f"--model {model!r} is the pool's orchestrator, which has no description to write; "
                          "name an expert (an experts: alias or a tools: entry)")
    suite = load_suite(env_options(env, data=data, extra=env_set or []))
    chosen = sample_tasks(suite.tasks, tasks, seed)
    if not chosen:
        raise ConfigError(f"--env {env}: the environment has no tasks")
    settings = EpisodeSettings(
        limits=Limits(max_turns=max_turns or suite.max_turns), build_prompt=suite.prompt,
        render_observation=suite.observation,
        sampling=Sampling(temperature=endpoint.temperature, max_tokens=endpoint.max_tokens))
    cache: dict[tuple[object, ...], ChatBackend] = {}
    solver, writer = make_backend(endpoint, table, cache), make_backend(describer_endpoint, table, cache)
    typer.echo(f"running {model} on {len(chosen)} task(s) of {env}", err=True)
    results, text, cost_usd = asyncio.run(describe_model(suite.env, chosen, solver, writer, name=model,
                                                         settings=settings, concurrency=concurrency))
    solved = sum(r.outcome.solved for r in results)
    typer.echo(f"{model}: solved {solved} of {len(results)}; spent ${cost_usd:.6f} (runs and description)", err=True)
    typer.echo(text)
    if write is not None:
        where = write_description(raw, entries, text, write)
        typer.echo(f"wrote the description to {', '.join(where)} in {write}", err=True)


async def describe_model(env: Any, tasks: Sequence[Task], solver: ChatBackend, describer: ChatBackend, *,
                         name: str, settings: EpisodeSettings, concurrency: int = 4
                         ) -> tuple[list[EpisodeResult], str, float]:
    """(the graded episodes, the description, what runs and description cost in $). A describer that fails or
    writes nothing raises `BackendError`: there is no description to store."""
    results = await run_many(env, tasks, solver, settings, concurrency=concurrency)
    completion = await describer.complete(describer_prompt(name, results), [],
                                          Sampling(max_tokens=DESCRIBER_MAX_TOKENS))
    text = strip_think(completion.text).strip()
    if not text:
        raise BackendError(f"the describer ({describer.model}) wrote no description")
    spent = sum(r.trajectory.cost_usd for r in results) + completion.cost_usd
    return results, text, spent


def sample_tasks(tasks: Sequence[Task], n: int, seed: int) -> list[Task]:
    """`n` tasks drawn without replacement with `seed`, in the environment's order (all when there are fewer)."""
    if n >= len(tasks):
        return list(tasks)
    picked = sorted(random.Random(seed).sample(range(len(tasks)), n))
    return [tasks[i] for i in picked]


def describer_prompt(name: str, results: Sequence[EpisodeResult]) -> list[Message]:
    """One block per task (its text, domain when the task names one, the calls made, the answer, the ending and
    PASS/FAIL), then the instruction. Gold answers are not included."""
    blocks = []
    for i, r in enumerate(results, 1):
        t = r.trajectory
        domain = next((str(r.task.metadata[k]) for k in ("domain", "category", "subject") if r.task.metadata.get(k)),
                      None)
        calls = ", ".join(f"{c.name}" for c in t.calls) or "none"
        answer = (t.final_answer or "(none)")[:MAX_ANSWER_CHARS]
        blocks.append("\n".join([
            f"## Task {i}: {'PASS' if r.outcome.solved else 'FAIL'}" + (f" (domain: {domain})" if domain else ""),
            r.task.prompt[:MAX_TASK_CHARS], f"Tool calls: {calls}", f"Answer: {answer}",
            f"Ended: {t.termination.value}" + (f" ({t.error})" if t.error else "")]))
    solved = sum(r.outcome.solved for r in results)
    summary = f"{name} solved {solved} of {len(results)} tasks."
    return [Message("system", "You write short, factual capability descriptions of AI models."),
            Message("user", "\n\n".join([*blocks, summary, INSTRUCTION.format(name=name)]))]


def resolve_model(config: PoolConfig, name: str) -> tuple[ModelEndpoint, list[tuple[str, ...]]]:
    """The endpoint `name` denotes and the pool entries (paths into the YAML) whose `description` it owns: an
    `experts:` alias or a tool name names one entry; a model name names every expert entry using it; the
    orchestrator's model (when nothing else matches) names none."""
    if name in config.experts:
        return config.experts[name], [("experts", name)]
    for i, entry in enumerate(config.tools):
        if entry.expert is not None and entry.name == name:
            return entry.expert, [("tools", str(i))]
    entries: list[tuple[str, ...]] = [("experts", a) for a, e in config.experts.items() if e.model == name]
    entries += [("tools", str(i)) for i, e in enumerate(config.tools) if e.expert is not None and e.expert.model == name]
    if entries:
        first = entries[0]
        endpoint = config.experts[first[1]] if first[0] == "experts" else config.tools[int(first[1])].expert
        assert endpoint is not None
        return endpoint, entries
    if config.orchestrator.model == name:
        return config.orchestrator, []
    known = sorted({*config.experts, *(e.name for e in config.tools if e.expert is not None and e.name),
                    *(e.expert.model for e in config.tools if e.expert is not None),
                    *(e.model for e in config.experts.values()), config.orchestrator.model})
    raise ConfigError(f"model {name!r} is not in the pool; its models: {', '.join(known)}")


def write_description(raw: dict[str, Any], entries: Sequence[tuple[str, ...]], text: str, out: Path) -> list[str]:
    """Set `description` on each entry of the pool data `raw`, check the result against `PoolConfig`, write it to
    `out`; the dotted names of the entries written."""
    import copy

    import pydantic

    data = copy.deepcopy(raw)
    for section, key in entries:
        node = data[section][int(key)] if section == "tools" else data[section][key]
        node["description"] = text
    try:
        PoolConfig.model_validate(data)
    except pydantic.ValidationError as exc:
        raise ConfigError(f"--write {out}: the pool would be invalid: {describe_validation(exc, PoolConfig)}") from None
    out.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return [".".join(e) for e in entries]


def _read_pool(path: Path) -> tuple[dict[str, Any], PoolConfig]:
    from orchestra.pool import load_pool_config

    config = load_pool_config(path)  # names the file and field on any problem
    raw = yaml.safe_load(Path(path).read_text()) or {}
    return raw, config
