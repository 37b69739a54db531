"""Evaluation: the runner with its resumable results store, baselines, orchestrator specs, and reports.

    orchestra eval routerbench --dev-fraction 0.2 -o always:gpt-4 -o knn -o cascade --out runs
    orchestra report runs --out report

Library use: `suite = orchestra.envs.registry.load_suite({"name": ..., ...})`;
`resolve_orchestrator(spec, SpecContext(suite))` -> `Orchestrator`; `await evaluate(suite.env, suite.tasks,
orchestrator, run_dir, config={"env": suite.identity})` -> the summary written to `run_dir/results.json`;
`write_report(run_dirs, out)`.
Importing this package imports neither torch nor matplotlib.
"""

from orchestra.evaluate.report_files import write_report
from orchestra.evaluate.run import config_hash, evaluate, item_id, summarize
from orchestra.evaluate.spec import Orchestrator, SpecContext, resolve_orchestrator
from orchestra.evaluate.store import ResultStore

__all__ = ["Orchestrator", "ResultStore", "SpecContext", "config_hash", "evaluate", "item_id",
           "resolve_orchestrator", "summarize", "write_report"]
