"""Evaluation: the runner with its resumable results store, baselines, orchestrator specs, and reports.

    orchestra eval routerbench --dev-fraction 0.2 -o always:gpt-4 -o knn -o cascade --out runs
    orchestra report runs --out report

Library use: `resolve_orchestrator(spec, SpecContext(env, ...))` -> `Orchestrator`; `await evaluate(env, tasks,
orchestrator, run_dir, config=...)` -> the summary written to `run_dir/results.json`; `write_report(run_dirs, out)`.
Importing this package imports neither torch nor matplotlib.
"""

from orchestra.evaluate.report import write_report
from orchestra.evaluate.run import config_hash, evaluate, item_id, summarize
from orchestra.evaluate.spec import Orchestrator, SpecContext, resolve_orchestrator
from orchestra.evaluate.store import ResultStore

__all__ = ["Orchestrator", "ResultStore", "SpecContext", "config_hash", "evaluate", "item_id",
           "resolve_orchestrator", "summarize", "write_report"]
