"""`orchestra synth llm` against a real local model over HTTP: `orchestra serve-model --model bundled` (SmolLM2-135M).

A model this small mostly writes invalid output (Python where JSON is asked for, fields of the wrong shape): the run
must still finish, every rejection must carry a reason, and whatever was accepted must pass verification (the
folder passes `env check tau`; tools in it passed the sandbox check). Sized to a few items per stage: about a minute
on an idle 2-core machine (SmolLM2 ~15 tokens/s), 2-4 minutes when other jobs share the cores.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from orchestra.envs.tau.env import check_domain
from tests.test_serve import ORCHESTRA, start_serve_command


@pytest.mark.integration
def test_smollm2_over_http_runs_the_pipeline_to_the_end(tmp_path: Path) -> None:
    model = start_serve_command(tmp_path, ["serve-model", "--model", "bundled", "--batch-wait-s", "0.2"])
    out = tmp_path / "library"
    try:
        started = time.monotonic()
        run = subprocess.run([ORCHESTRA, "synth", "llm", "--domain", "library", "--model", "smollm2-135m-instruct",
                              "--base-url", model.base_url, "--out", str(out), "--tables", "1", "--records", "2",
                              "--tasks", "2", "--attempts", "2", "--max-tokens", "160", "--timeout-s", "300"],
                             capture_output=True, text=True, timeout=600)  # a guard: ~1 min on an idle machine
        elapsed_s = time.monotonic() - started
    finally:
        model.stop()
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads((out / "rejections.json").read_text())
    stats = json.loads((out / "stats.json").read_text())
    assert stats["model_calls"] >= 1 and report["stages"]["tables"]["items"] >= 1
    for item in report["rejected_items"]:
        assert item["reason"] and item["stage"], item
        assert item["status"] != "failed", item  # the endpoint answered every call
    check = check_domain(out)
    assert check.ok and check.errors == (), check.render()
    tools = json.loads((out / "tools.json").read_text())["tools"]
    source = (out / "tools.py").read_text()
    assert all(f"def {t['name']}(" in source for t in tools)
    print(f"\nSmolLM2 synth llm: {elapsed_s:.0f} s, {stats['model_calls']} calls, {stats['tasks']} tasks, "
          f"{stats['tools']} tools; " + "; ".join(f"{s}: {v['accepted']}/{v['items']} {v['reasons']}"
                                                for s, v in report["stages"].items()))
