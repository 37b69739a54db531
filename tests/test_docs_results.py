"""Published demo numbers are the numbers of a run: each table in docs/results/ is rendered from the summary.json
committed beside it, and the README and docs quote that table verbatim."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestra.commands import demo_generalize, demo_results, demo_seeds, demo_tools

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
RENDER = {"demo": demo_results.results_markdown, "demo-tools": demo_tools.results_markdown,
          "demo-generalize": demo_generalize.results_markdown, "demo-seeds": demo_seeds.results_markdown}
QUOTED_IN = {"demo": ("README.md", "docs/demo.md"), "demo-tools": ("docs/demo-tools.md", "docs/training.md"),
             "demo-generalize": ("docs/demo.md",), "demo-seeds": ("docs/demo.md",)}


@pytest.mark.parametrize("name", sorted(RENDER))
def test_each_published_table_is_its_summary_rendered_and_quoted_verbatim(name):
    summary, table = RESULTS / f"{name}.json", RESULTS / f"{name}.md"
    if not summary.exists():
        pytest.skip(f"no published run of {name} yet (make {name} writes {summary})")
    rendered = RENDER[name](json.loads(summary.read_text()))
    assert table.read_text() == rendered
    for doc in QUOTED_IN[name]:
        text = (ROOT / doc).read_text()
        missing = [line for line in rendered.splitlines() if line and line not in text]
        assert not missing, f"{doc} does not quote docs/results/{name}.md: {missing[:2]}"
