"""Reports: tables per benchmark, the Pareto plot with the single-model frontier, call shares, preference section;
the HTML is self-contained and renders in headless Chromium with the plot visible."""

import json
import shutil
import subprocess

import numpy as np
import pytest

from orchestra.evaluate.report import (
    BEST_COLOR,
    FRONTIER_COLOR,
    frontier,
    group_benchmarks,
    load_runs,
)
from orchestra.evaluate.report_files import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
POLICIES = {
    "always:gpt-4": (0.88, 0.0050, {"gpt-4": 1.0}),
    "always:mixtral": (0.70, 0.00025, {"mixtral": 1.0}),
    "always:claude-2": (0.60, 0.0038, {"claude-2": 1.0}),  # dominated: not on the frontier
    "always:mistral-7b": (0.55, 0.00008, {"mistral-7b": 1.0}),
    "knn": (0.85, 0.0011, {"gpt-4": 0.3, "yi-34b": 0.5, "mixtral": 0.2}),
    "cascade": (0.84, 0.0012, {"gpt-4": 0.1, "yi-34b": 0.6, "mixtral": 0.3}),
    "oracle": (0.97, 0.00017, {"mistral-7b": 0.7, "mixtral": 0.3}),
}


def make_run(root, spec, accuracy, cost, shares, part="dev", preference=None):
    folder = root / spec.replace(":", "_")
    folder.mkdir(parents=True)
    results = {
        "n": 443, "accuracy": accuracy, "cost_per_query_usd": cost, "latency_per_query_s": 0.01,
        "calls": {"per_query": 1.0, "share": shares},
        "config": {"env": "routerbench", "data": "/data/routerbench", "part": part, "dev_fraction": 0.2, "seed": 0,
                   "spec": spec, "preferences": {"instruction": "avoid claude"} if preference else None},
    }
    if preference:
        results["preference"] = preference
    (folder / "results.json").write_text(json.dumps(results))
    return folder


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    for spec, (acc, cost, shares) in POLICIES.items():
        make_run(root, spec, acc, cost, shares)
    make_run(root / "pref", "knn", 0.83, 0.001, {"gpt-4": 0.4, "yi-34b": 0.6},
             preference={"dispreferred_call_share": 0.0, "score": 1.25, "score_sum": 553.75, "n_compared": 443})
    return root


def test_frontier_keeps_only_undominated_points():
    assert frontier([(1, 0.5), (2, 0.4), (3, 0.9), (0.5, 0.2), (3, 0.7)]) == [(0.5, 0.2), (1, 0.5), (3, 0.9)]


def test_runs_group_by_benchmark_and_sort_by_cost(runs):
    benchmarks = group_benchmarks(load_runs([runs, runs / "pref"]))
    assert len(benchmarks) == 2
    main, pref = benchmarks
    assert [r.policy for r in main.runs][:2] == ["always:mistral-7b", "oracle"]
    assert "avoid claude" in pref.title and [r.policy for r in pref.runs] == ["knn"]


def test_report_markdown_and_self_contained_html(runs, tmp_path):
    md_path, html_path = write_report([runs, runs / "pref"], tmp_path / "out", title="RouterBench dev")
    md = md_path.read_text()
    assert "| knn | 443 | 0.8500 | 0.001100 |" in md
    assert "Best single model: **always:gpt-4**" in md
    assert "| knn | 0.000 | 1.250 | 443 |" in md  # preference section
    for name in ("pareto-1.png", "calls-1.png", "pareto-2.png", "calls-2.png"):
        assert (tmp_path / "out" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    html = html_path.read_text()
    assert html.count('src="data:image/png;base64,') == 4
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert '<tr class="best"><td>always:gpt-4</td>' in html


def test_report_of_a_folder_without_results_is_a_config_error(tmp_path):
    from orchestra.errors import ConfigError

    with pytest.raises(ConfigError, match="no results.json"):
        write_report([tmp_path], tmp_path / "out")


def colour_mask(pixels, hex_colour, tolerance=40):
    rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    return np.abs(pixels[..., :3].astype(int) - rgb).max(axis=-1) <= tolerance


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_html_renders_in_headless_chromium_with_the_plot_visible(runs, tmp_path):
    from PIL import Image

    _, html_path = write_report([runs], tmp_path / "out")
    shot = tmp_path / "shot.png"
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,1600",
         html_path.resolve().as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (1600, 1200)
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200  # not a blank or error page
    frontier_rows = np.nonzero(colour_mask(pixels, FRONTIER_COLOR).any(axis=1))[0]
    star_rows = np.nonzero(colour_mask(pixels, BEST_COLOR).any(axis=1))[0]
    assert colour_mask(pixels, FRONTIER_COLOR).sum() > 300  # the frontier line is drawn
    assert colour_mask(pixels, BEST_COLOR).sum() > 50  # the best single model's star
    # Both sit in the plot region: below the heading, within the first ~700 px where the Pareto plot is placed.
    assert frontier_rows.min() > 60 and frontier_rows.max() < 800
    assert star_rows.min() > 60 and star_rows.max() < 800
