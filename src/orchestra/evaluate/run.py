"""The evaluation runner: run an orchestrator over an environment's tasks, store every finished item, summarize.

`evaluate` runs the tasks through the one episode loop (`orchestra.rollout.batch.run_many`, bounded concurrency),
once per trial, appending each finished item to the run's `ResultStore` as it lands, then writes `results.json`
(`summarize`). Run again on the same folder and it resumes: items already stored under the same config hash are not
run (nor paid) again; a different config hash is refused unless `force` (see `orchestra.evaluate.store`).

Invariants
- An item is `<task id>#<trial>`; it is in the store at most once, and its line is on disk before it is reported.
- Trial t samples with seed `settings.sampling.seed + t` (0 + t when unset), so trials differ and a resumed trial
  draws what the interrupted one would have; rule baselines seed on it too.
- The summary is a pure function of the stored records of the requested items: a resumed run and an uninterrupted
  one with the same per-item results have equal metrics (wall-clock latency aside).
- The config hash covers everything that changes an item's result, not how the run is executed (concurrency,
  limit, trials count). The caller's `config` names the environment (its `Suite.identity`: data paths and
  digests), prices and spec; the runner itself adds what it runs with: the orchestrator (spec, resolved details,
  a checkpoint's folder digest) and the episode settings (limits, sampling, preferences, pool tool schemas, prompt
  builder and observation renderer), so no caller can leave them out. A resume whose config differs is refused,
  naming the inputs that changed, unless only file locations changed whose contents did not (`moved_only`: a
  checkpoint folder or data copied elsewhere); its items are then kept under the new hash.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from orchestra.evaluate.spec import Orchestrator
from orchestra.evaluate.store import ResultStore
from orchestra.preferences import Preferences
from orchestra.rollout.batch import EpisodeResult, EpisodeSettings, run_many
from orchestra.task import Environment, Task
from orchestra.trajectory import trajectory_to_dict

ItemCallback = Callable[[Mapping[str, Any]], None]


def config_hash(config: Mapping[str, Any]) -> str:
    """A short, stable hash of a JSON-able config (key order does not matter)."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def moved_only(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether two run configs differ only in the locations of files whose contents they record unchanged: the
    checkpoint folder (`orchestrator.spec` beside `orchestrator.folder_sha256`, and the caller's `spec` naming it),
    the environment's data (`env.data` beside `env.data_sha256`), the pool file (`pool.path` beside `pool.sha256`)
    and a prices file (`prices.overrides` beside `prices.overrides_sha256`)."""
    return _without_locations(old) == _without_locations(new)


def _without_locations(config: Mapping[str, Any]) -> Any:
    out = json.loads(json.dumps(config, default=str))
    orchestrator = out.get("orchestrator")
    if isinstance(orchestrator, dict) and orchestrator.get("folder_sha256"):
        if out.get("spec") == orchestrator.get("spec"):
            out.pop("spec", None)
        orchestrator.pop("spec", None)
    for key, path, digest in (("env", "data", "data_sha256"), ("pool", "path", "sha256"),
                              ("prices", "overrides", "overrides_sha256")):
        part = out.get(key)
        if isinstance(part, dict) and part.get(digest):
            part.pop(path, None)
    return out


def settings_fingerprint(settings: EpisodeSettings) -> dict[str, Any]:
    """What of the episode settings changes results, as JSON (functions by their qualified names)."""
    return {
        "limits": {k: sorted(v) if isinstance(v, frozenset) else v for k, v in asdict(settings.limits).items()},
        "sampling": asdict(settings.sampling),
        "preferences": preferences_to_dict(settings.preferences),
        "pool_tools": [t.spec.to_openai() for t in settings.pool_tools],
        "prompt": _qualname(settings.build_prompt),
        "observation": _qualname(settings.render_observation),
    }


def _qualname(fn: Any) -> str:
    return f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', type(fn).__name__)}"


def item_id(task_id: str, trial: int) -> str:
    return f"{task_id}#{trial}"


async def evaluate(
    env: Environment,
    tasks: Sequence[Task],
    orchestrator: Orchestrator,
    run_dir: str | Path,
    *,
    config: Mapping[str, Any],
    settings: EpisodeSettings | None = None,
    trials: int = 1,
    concurrency: int = 8,
    force: bool = False,
    on_item: ItemCallback | None = None,
    on_start: Callable[[Sequence[Mapping[str, Any]]], None] | None = None,
    base_records: Sequence[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run (or resume) the evaluation into `run_dir`; returns the summary also written to `results.json`.

    `on_start` receives the records already done (for a progress bar), `on_item` each new record once it is on disk.
    `base_records` are the items of the same orchestrator without preferences (for the preference-following score).
    """
    if trials < 1:
        raise ValueError("trials must be >= 1")
    settings = settings or EpisodeSettings()
    config = {**config, "orchestrator": {"spec": orchestrator.spec, **dict(orchestrator.details)},
              "settings": settings_fingerprint(settings)}
    digest = config_hash(config)
    wanted = [item_id(t.id, trial) for trial in range(trials) for t in tasks]
    if len(set(wanted)) != len(wanted):
        raise ValueError("task ids must be unique")
    with ResultStore(run_dir) as store:
        done = store.open(config, digest, force=force, same_run=moved_only)
        if on_start is not None:
            on_start([done[i] for i in wanted if i in done])
        base_seed = settings.sampling.seed or 0
        for trial in range(trials):
            pending = [t for t in tasks if item_id(t.id, trial) not in done]
            if not pending:
                continue
            trial_settings = replace(settings, build_prompt=orchestrator.build_prompt,
                                     sampling=replace(settings.sampling, seed=base_seed + trial))

            def land(result: EpisodeResult, trial: int = trial) -> None:
                record = item_record(result, trial, digest)
                if store.append(record) and on_item is not None:
                    on_item(record)

            await run_many(env, pending, orchestrator.backend, trial_settings, concurrency=concurrency,
                           on_result=land)
        by_id = {r["id"]: r for r in store.records()}
        records = [by_id[i] for i in wanted if i in by_id]
        results = summarize(records, config, trials=trials, base_records=base_records)
        results["config_hash"] = digest
        results["orchestrator"] = {"spec": orchestrator.spec, "name": orchestrator.backend.model,
                                   **dict(orchestrator.details)}
        store.write_results(results)
    return results


def item_record(result: EpisodeResult, trial: int, digest: str) -> dict[str, Any]:
    """The store line of one finished item (secrets redacted from every string)."""
    tr, outcome = result.trajectory, result.outcome
    record = {
        "id": item_id(result.task.id, trial),
        "task_id": result.task.id,
        "trial": trial,
        "config_hash": digest,
        "solved": bool(outcome.solved),
        "outcome": {"solved": bool(outcome.solved), "score": outcome.score, "breakdown": dict(outcome.breakdown),
                    "details": outcome.details, "grader_cost_usd": outcome.grader_cost_usd},
        "cost_usd": tr.cost_usd,
        "latency_s": tr.latency_s,
        "tool_latency_s": tr.tool_latency_s,
        "tool_counts": dict(tr.tool_counts()),
        "termination": str(tr.termination),
        "format_errors": tr.format_errors,
        "preferences": preferences_to_dict(result.preferences),
        "metadata": json.loads(json.dumps(dict(result.task.metadata), default=str)),
        "trajectory": trajectory_to_dict(tr),
    }
    return _redacted(record)


def preferences_to_dict(preferences: Preferences | None) -> dict[str, Any] | None:
    if preferences is None:
        return None
    return {"tool_weights": dict(preferences.tool_weights), "outcome": preferences.outcome,
            "cost": preferences.cost, "latency": preferences.latency, "instruction": preferences.instruction}


def preferences_from_dict(data: Mapping[str, Any]) -> Preferences:
    return Preferences(dict(data.get("tool_weights") or {}), float(data.get("outcome", 1.0)),
                       float(data.get("cost", 0.0)), float(data.get("latency", 0.0)), str(data.get("instruction", "")))


def summarize(records: Sequence[Mapping[str, Any]], config: Mapping[str, Any], *, trials: int = 1,
              base_records: Sequence[Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """results.json: accuracy, $/query, latency, call shares, terminations, pass^k, preference score, config."""
    n = len(records)
    calls: Counter[str] = Counter()
    for r in records:
        calls.update(r["tool_counts"])
    total_calls = sum(calls.values())
    results: dict[str, Any] = {
        "n": n,
        "n_tasks": len({r["task_id"] for r in records}),
        "trials": trials,
        "accuracy": _mean(float(r["solved"]) for r in records),
        "cost_per_query_usd": _mean(r["cost_usd"] for r in records),
        "total_cost_usd": sum(r["cost_usd"] for r in records),
        "latency_per_query_s": _mean(r["latency_s"] for r in records),
        "grader_cost_usd": sum(r["outcome"].get("grader_cost_usd", 0.0) for r in records),
        "calls": {
            "total": total_calls,
            "per_query": total_calls / n if n else 0.0,
            "share": {k: v / total_calls for k, v in sorted(calls.items())} if total_calls else {},
            "count": dict(sorted(calls.items())),
        },
        "terminations": dict(Counter(r["termination"] for r in records)),
        "format_errors": sum(r.get("format_errors", 0) for r in records),
        "by_task_type": _by_task_type(records),
        "config": dict(config),
    }
    if trials > 1:
        results["pass_at_1"] = results["accuracy"]
        results["pass_hat_k"] = pass_hat_k(records, trials)
    if any(r.get("preferences") for r in records):
        results["preference"] = preference_summary(records, base_records)
    return results


def pass_hat_k(records: Sequence[Mapping[str, Any]], trials: int) -> dict[str, float]:
    """tau^2's pass^k for k = 1..trials: over tasks, the chance that k trials drawn from its n all succeed,
    C(c, k) / C(n, k) with c successes in n trials; pass^n is the share of tasks solved in every trial."""
    solved: dict[str, list[bool]] = {}
    for r in records:
        solved.setdefault(r["task_id"], []).append(bool(r["solved"]))
    out = {}
    for k in range(1, trials + 1):
        values = [math.comb(sum(s), k) / math.comb(len(s), k) for s in solved.values() if len(s) >= k]
        out[str(k)] = _mean(values)
    return out


def preference_summary(records: Sequence[Mapping[str, Any]],
                       base_records: Sequence[Mapping[str, Any]] | None) -> dict[str, Any]:
    """The paper's preference-following score against a base run (when given), and the share of calls that went
    to tools the preferences weigh 0 (among tools they name)."""
    from orchestra.rewards.preference import preference_following_score

    named_zero = dispreferred = 0
    scores = []
    base = {r["id"]: r for r in base_records or ()}
    for r in records:
        prefs = preferences_from_dict(r["preferences"] or {})
        for tool_name, count in r["tool_counts"].items():
            if tool_name in prefs.tool_weights:
                named_zero += count
                dispreferred += count if prefs.tool_weights[tool_name] == 0 else 0
        b = base.get(r["id"])
        if b is not None:
            names = tuple(sorted({*prefs.tool_weights, *r["tool_counts"], *b["tool_counts"]}))
            scores.append(preference_following_score(_features(r, names), _features(b, names), prefs))
    out: dict[str, Any] = {"dispreferred_call_share": dispreferred / named_zero if named_zero else 0.0,
                           "instruction": (records[0].get("preferences") or {}).get("instruction", "")}
    if scores:
        out.update(score=_mean(scores), score_sum=sum(scores), n_compared=len(scores))
    return out


def _features(record: Mapping[str, Any], names: tuple[str, ...]) -> Any:
    from orchestra.rewards.preference import Features

    counts = record["tool_counts"]
    return Features(names, tuple(int(counts.get(n, 0)) for n in names), bool(record["solved"]),
                    float(record["cost_usd"]), float(record.get("tool_latency_s", 0.0)))


def _by_task_type(records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in records:
        task_type = (r.get("metadata") or {}).get("task_type")
        if task_type is not None:
            groups.setdefault(str(task_type), []).append(r)
    return {t: {"n": len(g), "accuracy": _mean(float(r["solved"]) for r in g),
                "cost_per_query_usd": _mean(r["cost_usd"] for r in g)} for t, g in sorted(groups.items())}


def _mean(values: Any) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def _redacted(record: dict[str, Any]) -> dict[str, Any]:
    """The record with secrets masked by `orchestra.redact.redact`, applied to its serialized JSON once (one scan
    of the environment per item, not per string). Secret values are also looked for in their JSON-escaped form; if
    masking ever broke the JSON, each string is redacted on its own instead."""
    try:
        from orchestra.redact import redact, secret_env_values
    except ImportError:  # redaction is another module's job; without it the record is stored as is
        return record
    line = json.dumps(record, ensure_ascii=False, allow_nan=False)
    escaped = tuple(e for v in secret_env_values() if (e := json.dumps(v, ensure_ascii=False)[1:-1]) != v)
    masked = redact(line, extra_secrets=escaped)
    if masked == line:
        return record
    try:
        return json.loads(masked)
    except ValueError:
        return _redact_strings(record, redact)


def _redact_strings(value: Any, redact: Callable[[str], str]) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redact_strings(v, redact) for k, v in value.items()}
    if isinstance(value, list):
        return [_redact_strings(v, redact) for v in value]
    return value
