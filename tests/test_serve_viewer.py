"""Run folders: `orchestra export` to Parquet (messages in OpenAI's shape, loaded by `datasets` and rendered by a
chat template), and the trajectory viewer (`orchestra view`) checked over HTTP and in headless Chromium.

The run folder is real: episodes run by `run_episode` (scripted orchestrator, the real calculator), graded and
stored by the evaluation store exactly as `orchestra eval` writes them.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import httpx2 as httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from orchestra.backends.scripted import ScriptedBackend
from orchestra.cli import app
from orchestra.evaluate.run import item_record
from orchestra.evaluate.store import ResultStore
from orchestra.preferences import Preferences
from orchestra.rollout.batch import EpisodeResult
from orchestra.rollout.episode import run_episode
from orchestra.serve.runs import load_run
from orchestra.task import Task
from orchestra.tools.builtin.calculator import calculator_tool
from orchestra.tools.toolbox import Toolbox
from orchestra.trajectory import append_trajectory
from orchestra.types import Outcome
from tests.test_serve import start_serve_command

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TURN_BORDER = (0x35, 0x69, 0xD4)
CALL = '<tool_call>{"name": "calculator", "arguments": {"expression": "%s"}}</tool_call>'


def episodes() -> list[tuple[Task, object, bool]]:
    async def run() -> list:
        out = []
        for i, (expression, answer, right) in enumerate([("6*7", "42", True), ("2+2", "5", False),
                                                          ("10/4", "2.5", True)]):
            task = Task(f"task-{i}", f"What is {expression}?")
            backend = ScriptedBackend([CALL % expression, f"The answer is {answer}."])
            trajectory = await run_episode(task, backend, Toolbox.of([calculator_tool()]),
                                           preferences=Preferences(cost=0.9, instruction="Keep it cheap."))
            out.append((task, trajectory, right))
        return out

    return asyncio.run(run())


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("runs") / "eval"
    prefs = Preferences(cost=0.9, instruction="Keep it cheap.")
    with ResultStore(folder) as store:
        store.open({"spec": "scripted"}, "hash0")
        for task, trajectory, right in episodes():
            store.append(item_record(EpisodeResult(task, trajectory, Outcome(right, float(right)), prefs), 0, "hash0"))
    return folder


def test_export_writes_items_and_calls_loadable_by_datasets_and_a_chat_template(run_dir: Path,
                                                                               tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    out = tmp_path / "run.parquet"
    result = CliRunner().invoke(app, ["export", str(run_dir), "--out", str(out)])
    assert result.exit_code == 0, result.output
    items = pq.read_table(out).to_pylist()
    calls = pq.read_table(tmp_path / "run.calls.parquet").to_pylist()
    assert [(r["id"], r["solved"], r["turns"]) for r in items] == [
        ("task-0#0", True, 2), ("task-1#0", False, 2), ("task-2#0", True, 2)]
    assert items[0]["preference"] == "Keep it cheap." and items[0]["tool_counts"] == [{"tool": "calculator", "calls": 1}]
    assistant = items[0]["messages"][2]
    assert assistant["role"] == "assistant" and assistant["tool_calls"][0]["type"] == "function"
    assert assistant["tool_calls"][0]["function"] == {"name": "calculator", "arguments": '{"expression": "6*7"}'}
    assert [(c["name"], c["status"], c["content"]) for c in calls] == [
        ("calculator", "ok", "42"), ("calculator", "ok", "4"), ("calculator", "ok", "2.5")]

    from datasets import Dataset

    from orchestra.backends.tiny import CHATML_TOOLS_TEMPLATE, tiny_tokenizer

    dataset = Dataset.from_parquet(str(out))
    tokenizer = tiny_tokenizer(CHATML_TOOLS_TEMPLATE)
    text = tokenizer.apply_chat_template(dataset[0]["messages"], tokenize=False)
    assert "calculator" in text and "6*7" in text and "The answer is 42." in text


def test_export_refuses_a_folder_that_is_not_a_run(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["export", str(tmp_path), "--out", str(tmp_path / "x.parquet")])
    assert result.exit_code == 2 and "items.jsonl" in result.output


def test_served_trajectories_file_is_a_run_too(tmp_path: Path) -> None:
    for _, trajectory, _ in episodes():
        append_trajectory(tmp_path / "trajectories.jsonl", trajectory)
    items = load_run(tmp_path)
    assert [i.id for i in items] == ["task-0", "task-1", "task-2"] and all(i.solved is None for i in items)


def test_viewer_lists_filters_and_shows_an_episode(run_dir: Path, tmp_path: Path) -> None:
    served = start_serve_command(tmp_path, ["view", str(run_dir)])
    try:
        root = f"http://127.0.0.1:{served.port}"
        listing = httpx.get(f"{root}/trajectories").text
        assert listing.count('href="/trajectories/task-') == 3 and "solved 2/3" in listing
        unsolved = httpx.get(f"{root}/trajectories", params={"solved": "no"}).text
        assert unsolved.count('href="/trajectories/task-') == 1 and "task-1#0" in unsolved
        page = httpx.get(f"{root}/trajectories/task-0%230").text
        assert "Keep it cheap." in page and "turn 1" in page and "calculator" in page and "42" in page
        assert httpx.get(f"{root}/trajectories/nope").status_code == 404
        if CHROMIUM is None:
            pytest.skip("chromium is not installed (apt-get install -y chromium)")
        for url, name in ((f"{root}/trajectories", "list"), (f"{root}/trajectories/task-0%230", "episode")):
            pixels = screenshot(url, tmp_path / f"{name}.png", tmp_path)
            assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # text and table, not a blank page
            if name == "episode":  # the turns' coloured borders are drawn
                assert (np.abs(pixels.astype(int) - TURN_BORDER).max(axis=-1) <= 8).sum() > 200
    finally:
        served.stop()


def screenshot(url: str, shot: Path, tmp: Path) -> np.ndarray:
    from PIL import Image

    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp / 'profile'}", f"--screenshot={shot}", "--window-size=1200,900", url],
        check=True, capture_output=True, timeout=120,
    )
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (900, 1200)
    return pixels
