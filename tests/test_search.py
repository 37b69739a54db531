"""Local search: corpus reading, index build/load/query, bad index folders, the local_search tool and its pool entry."""

from __future__ import annotations

import json
from pathlib import Path

import bm25s
import pytest

from orchestra.config import PoolConfig, load_config
from orchestra.errors import ConfigError
from orchestra.pool import build_pool
from orchestra.search.corpus import read_corpus
from orchestra.search.index import FORMAT_VERSION, SearchIndex, build_index, fuse_rrf, query_tokens
from orchestra.tools.builtin.search import local_search_tool
from orchestra.tools.toolbox import Toolbox
from orchestra.types import ToolCall

DOCS = [
    {"id": "lists", "title": "Lists", "text": "Python lists are mutable sequences used to store collections."},
    {"id": "tuples", "title": "Tuples", "text": "Tuples are immutable sequences, often of heterogeneous data."},
    {"id": "dicts", "title": "Dictionaries", "text": "A dictionary maps hashable keys to arbitrary values."},
    {"id": "moscow", "title": "Москва", "text": "Москва — столица России и крупнейший город страны."},
    {"id": "logos", "title": "Λόγος", "text": "Ο λόγος είναι έννοια της αρχαίας ελληνικής φιλοσοφίας."},
    {"id": "tokyo", "text": "東京 は 日本 の 首都 です 。 人口 が 多い", "url": "https://example.org/tokyo"},
    {"id": "sets", "title": "Sets", "text": "A set is an unordered collection of distinct hashable objects."},
]


def write_corpus(path: Path, docs: list[dict[str, object]] = DOCS) -> Path:
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("search")
    out = root / "index"
    build_index(write_corpus(root / "docs.jsonl"), out)
    return out


@pytest.fixture(scope="module")
def index(index_dir: Path) -> SearchIndex:
    return SearchIndex.load(index_dir)


def test_build_query_and_reload_give_the_same_hits(tmp_path: Path, index_dir: Path, index: SearchIndex) -> None:
    hits = index.search("immutable tuples", k=3)
    assert hits[0].id == "tuples" and hits[0].title == "Tuples" and hits[0].score > 0
    assert [h.id for h in SearchIndex.load(index_dir).search("immutable tuples", k=3)] == [h.id for h in hits]
    manifest = json.loads((index_dir / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION and manifest["n_docs"] == len(DOCS)
    assert len(manifest["source_sha256"]) == 64


def test_stemming_matches_inflected_forms(index: SearchIndex) -> None:
    assert index.search("storing a collection", k=1)[0].id in {"lists", "sets"}
    assert index.search("mapping keys", k=1)[0].id == "dicts"


def test_no_matching_term_or_blank_query_gives_no_hits(index: SearchIndex) -> None:
    assert index.search("zzzz qqqq", k=5) == []
    assert index.search("   ", k=5) == []
    assert index.search("the of and", k=5) == []  # stopwords only


def test_queries_are_stemmed_only_when_the_index_was(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import orchestra.search.index as index_module

    monkeypatch.setattr(index_module, "_stemmer", lambda: None)  # build as where PyStemmer is not installed
    build_index(write_corpus(tmp_path / "docs.jsonl"), tmp_path / "plain")
    monkeypatch.undo()
    plain = SearchIndex.load(tmp_path / "plain")
    assert plain.manifest["stemmer"] is None
    assert plain.search("collections", k=1)[0].id == "lists"  # the exact surface form, not the stem "collect"
    assert plain.search("collection", k=1)[0].id == "sets"


def test_k_larger_than_the_corpus_returns_what_matches(index: SearchIndex) -> None:
    assert len(index.search("sequences collection hashable", k=100)) <= len(DOCS)
    with pytest.raises(ValueError, match="k must be between"):
        index.search("lists", k=0)


@pytest.mark.parametrize(("query", "expected"), [
    ("столица России", "moscow"), ("ελληνικής φιλοσοφίας", "logos"), ("日本 首都", "tokyo"),
])
def test_non_latin_queries(index: SearchIndex, query: str, expected: str) -> None:
    hits = index.search(query, k=2)
    assert hits and hits[0].id == expected
    assert index.search("🙂 ∑ 🚀", k=2) == []


def test_query_tokens_are_exactly_bm25s_tokens() -> None:
    import Stemmer

    text = "The Running dogs' houses were RUNNING; naïve café déjà-vu, Москва столицы, 東京 日本, x_y2 a1 __init__"
    expected = bm25s.tokenize([text], stopwords="en", stemmer=Stemmer.Stemmer("english"), return_ids=False,
                              show_progress=False)[0]
    assert query_tokens(text) == expected


def test_search_many_equals_one_by_one(index: SearchIndex) -> None:
    queries = ["immutable", "hashable keys", "", "столица"]
    assert index.search_many(queries, k=3) == [index.search(q, k=3) for q in queries]


def test_reciprocal_rank_fusion() -> None:
    fused = fuse_rrf([[(1, 9.0), (2, 5.0)], [(2, 0.9), (3, 0.8)]])
    assert [d for d, _ in fused] == [2, 1, 3]
    assert fused[0][1] == pytest.approx(1 / 62 + 1 / 61)


def test_missing_index_folder_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"does not exist; build it with `orchestra index build"):
        SearchIndex.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="is not a search index"):
        SearchIndex.load(tmp_path / "empty")


def test_other_version_or_tampered_index_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "idx"
    build_index(write_corpus(tmp_path / "docs.jsonl"), out)
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").write_text(json.dumps({**manifest, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(ConfigError, match=rf"{out} has format version {FORMAT_VERSION + 1}.*rebuild it with"):
        SearchIndex.load(out)
    (out / "manifest.json").write_text(json.dumps(manifest))
    with (out / "docs.jsonl").open("a") as handle:
        handle.write('{"id": "x", "text": "planted", "title": "", "url": ""}\n')
    with pytest.raises(ConfigError, match="does not match the manifest"):
        SearchIndex.load(out)


def test_damaged_index_is_one_clear_error(tmp_path: Path) -> None:
    out = tmp_path / "idx"
    build_index(write_corpus(tmp_path / "docs.jsonl"), out)
    next((out / "bm25").glob("*.npy")).unlink()
    with pytest.raises(ConfigError, match=rf"search index {out} is incomplete or damaged.*rebuild it with"):
        SearchIndex.load(out)


def test_rebuild_replaces_an_index_but_never_a_foreign_folder(tmp_path: Path) -> None:
    out = tmp_path / "idx"
    build_index(write_corpus(tmp_path / "a.jsonl"), out)
    build_index(write_corpus(tmp_path / "b.jsonl", DOCS[:2]), out)
    assert len(SearchIndex.load(out).docs) == 2
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging folder left
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(ConfigError, match="exists and is not a search index"):
        build_index(tmp_path / "a.jsonl", foreign)
    assert (foreign / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(("line", "message"), [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"text": "no id"}', "`id` must be a non-empty string"),
    ('{"id": "a"}', "`text` must be a string"),
    ('{"id": "a", "text": "t", "title": 5}', "`title` must be a string"),
])
def test_bad_corpus_line_names_the_line(tmp_path: Path, line: str, message: str) -> None:
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text('{"id": "ok", "text": "fine"}\n\n' + line + "\n")
    with pytest.raises(ConfigError, match=rf"docs.jsonl:3: {message}"):
        read_corpus(corpus)


def test_duplicate_ids_and_missing_corpus(tmp_path: Path) -> None:
    corpus = tmp_path / "docs.jsonl"
    corpus.write_text('{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n')
    with pytest.raises(ConfigError, match="docs.jsonl:2: id 'a' appears twice"):
        read_corpus(corpus)
    with pytest.raises(ConfigError, match="does not exist"):
        read_corpus(tmp_path / "missing.jsonl")


def test_tool_schema_snapshot(index_dir: Path) -> None:
    spec = local_search_tool(index=str(index_dir)).spec
    assert spec.name == "local_search" and spec.kind == "basic"
    assert spec.parameters == {
        "additionalProperties": False,
        "properties": {
            "query": {"description": "what to look for, in plain words", "type": "string"},
            "k": {"default": 5, "description": "how many passages to return (1-20)", "maximum": 20, "minimum": 1,
                  "type": "integer"},
        },
        "required": ["query"],
        "type": "object",
    }


async def test_tool_through_the_toolbox_returns_hits_and_its_price(index_dir: Path) -> None:
    toolbox = Toolbox.of([local_search_tool(index=str(index_dir), usd_per_call=0.002, latency_s=0.01)])
    assert "$0.002 per call" in toolbox.specs()[0].rendered_description()
    obs = await toolbox.call(ToolCall("c1", "local_search", {"query": "Москва столица", "k": 2}))
    assert obs.status == "ok" and obs.cost_usd == pytest.approx(0.002)
    hits = json.loads(obs.content)
    assert hits[0]["id"] == "moscow" and "столица" in hits[0]["text"]  # non-Latin text reaches the model as is


@pytest.mark.parametrize("arguments", [
    {}, {"query": 3}, {"query": "x", "k": 0}, {"query": "x", "k": 21}, {"query": "x", "k": "many"},
    {"query": "x", "extra": True}, {"query": None},
])
async def test_malformed_arguments_become_error_observations(index_dir: Path, arguments: dict) -> None:
    toolbox = Toolbox.of([local_search_tool(index=str(index_dir))])
    obs = await toolbox.call(ToolCall("c1", "local_search", arguments))
    assert obs.status == "format_error" and obs.content.startswith("invalid arguments for local_search")


def _pool(tmp_path: Path, options: dict[str, object]) -> PoolConfig:
    path = tmp_path / "pool.yaml"
    path.write_text(json.dumps({"tools": [{"builtin": "calculator"},
                                          {"builtin": "local_search", "options": options}]}))
    return load_config(path, PoolConfig)


def test_pool_yaml_configures_local_search(tmp_path: Path, index_dir: Path) -> None:
    pool = build_pool(_pool(tmp_path, {"index": str(index_dir), "usd_per_call": 0.001}))
    search = next(t for t in pool.tools if t.name == "local_search")
    assert search.spec.cost.usd_per_call == 0.001


@pytest.mark.parametrize(("options", "message"), [
    ({"index": "{missing}"}, r"tools\.1: search index .*nope does not exist"),
    ({"colour": "red"}, r"tools\.1\.options\.colour: Unexpected keyword argument \(options of local_search: index"),
    ({"index": "{index}", "usd_per_call": -1}, r"tools\.1\.options\.usd_per_call: Input should be greater"),
    ({}, r"tools\.1: local_search needs exactly one of `index`"),
])
def test_bad_pool_options_name_the_field(tmp_path: Path, index_dir: Path, options: dict, message: str) -> None:
    filled = {k: v.format(missing=tmp_path / "nope", index=index_dir) if isinstance(v, str) else v
              for k, v in options.items()}
    with pytest.raises(ConfigError, match=message):
        build_pool(_pool(tmp_path, filled))


def test_options_on_an_expert_or_a_plain_builtin_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "pool.yaml"
    path.write_text(json.dumps({"tools": [{"builtin": "calculator", "options": {"precision": 3}}]}))
    with pytest.raises(ConfigError, match=r"tools\.0\.options\.precision: Unexpected keyword.*calculator: none"):
        build_pool(load_config(path, PoolConfig))
    path.write_text(json.dumps({"tools": [{"expert": {"model": "gpt-4o"}, "name": "e", "options": {"a": 1}}]}))
    with pytest.raises(ConfigError, match="`options` apply to built-in tools only"):
        load_config(path, PoolConfig)
