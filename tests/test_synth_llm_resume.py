"""`orchestra synth llm` killed with SIGKILL in the middle of a stage resumes without asking for finished items again.

The command runs as a subprocess against a scripted model server that answers slowly (one call at a time); the test
kills it once some, not all, record batches are stored, checks that the kill landed mid-stage, reruns it to the end,
and reads the server's request log: no finished item was requested again (only the one in flight at the kill may
be), and the folder equals an uninterrupted run's, byte for byte.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

from tests.servers.scripted_openai import ScriptedOpenAIServer
from tests.servers.synth_model import SynthScript
from tests.test_serve import ORCHESTRA

BATCHES = 3 * 5  # three tables, ten records each in batches of two
FILES = ("db.json", "tools.json", "tools.py", "tasks.json", "split_tasks.json", "schema.json", "policy.md")


def command(base_url: str, out: Path) -> list[str]:
    return [ORCHESTRA, "synth", "llm", "--domain", "shop", "--model", "gpt-5-mini", "--base-url", base_url,
            "--out", str(out), "--tables", "3", "--records", "10", "--batch", "2", "--tasks", "4",
            "--concurrency", "1"]


def stored(out: Path, stage: str) -> set[str]:
    items = set()
    for path in (out / ".cache" / stage).glob("*.json"):
        items.add(json.loads(path.read_text())["item"])
    return items


def test_kill_9_mid_stage_then_rerun_asks_only_for_unfinished_items(tmp_path: Path) -> None:
    out = tmp_path / "shop"
    script = SynthScript()
    with ScriptedOpenAIServer(script, latency_s=0.25) as server:
        proc = subprocess.Popen(command(server.base_url, out), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while len(stored(out, "records")) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert proc.returncode == -signal.SIGKILL, proc.stdout.read().decode() if proc.stdout else ""
        done_at_kill = stored(out, "records")
        asked_before = len(script.log)
        # The stress happened: the kill landed inside the records stage, some batches done and some not, no later
        # stage begun.
        assert 3 <= len(done_at_kill) < BATCHES, done_at_kill
        assert not (out / ".cache" / "tools").exists() and not (out / "tasks.json").exists()

        server.latency_s = 0.0
        rerun = subprocess.run(command(server.base_url, out), capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        asked_after = script.log[asked_before:]

    records_again = [key for stage, key in asked_after if stage == "records"]
    assert not set(records_again) & done_at_kill, (records_again, done_at_kill)
    assert not [k for s, k in asked_after if s in ("tables", "schema")]  # finished stages are not asked again
    in_flight = {k for s, k in script.log[:asked_before] if s == "records"} - done_at_kill
    assert len(in_flight) <= 1 and in_flight <= set(records_again)  # at most the one in flight is asked twice
    assert len(stored(out, "records")) == BATCHES
    assert "from cache" in rerun.stdout and json.loads((out / "stats.json").read_text())["tasks"] >= 1

    clean = tmp_path / "clean"
    with ScriptedOpenAIServer(SynthScript()) as server:
        subprocess.run(command(server.base_url, clean), check=True, capture_output=True, timeout=120)
    for name in FILES:
        assert (out / name).read_bytes() == (clean / name).read_bytes(), name
