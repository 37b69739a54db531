"""A search index folder: build it from a corpus, load it, query it (BM25, dense, or both fused).

Layout of an index folder (written to a temporary sibling, then renamed into place where the old index was removed,
so a crash leaves the old index, the new one, or neither, never a mix of two builds):
  manifest.json   format name and version, digests of the source corpus and of docs.jsonl, settings used
  docs.jsonl      the documents, normalized (`Doc.to_json`), in index order
  bm25/           the bm25s sparse index
  dense.npy       (optional) L2-normalized float32 embeddings, one row per document, all-MiniLM-L6-v2

Invariants
- `SearchIndex.load` accepts only a folder whose manifest has this module's `FORMAT_VERSION` and whose docs.jsonl
  matches the manifest's digest; anything else is a `ConfigError` naming the folder and saying how to rebuild it.
- Query tokens are made exactly as bm25s tokenizes the corpus (lowercase, `\\w\\w+` tokens, English stopwords out,
  English Snowball stems when PyStemmer is installed); the test suite checks the two agree.
- A blank query returns no hits, and so does a BM25 query with no indexed term (never k arbitrary zero-score
  documents); dense and hybrid rankings always return the k nearest documents.
- Hybrid ranking is reciprocal-rank fusion, score = sum over rankers of 1 / (RRF_K + rank), with ranks from 1.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

from orchestra.errors import ConfigError
from orchestra.search.corpus import Doc, file_sha256, read_corpus

FORMAT = "orchestra-search-index"
FORMAT_VERSION = 1
MAX_K = 100
RRF_K = 60
SNIPPET_CHARS = 500
Mode = Literal["bm25", "dense", "hybrid"]
_TOKEN = re.compile(r"(?u)\b\w\w+\b")


@dataclass(frozen=True, slots=True)
class Hit:
    """One search result: the document's id, title and url, a snippet of its text, and its ranking score."""

    id: str
    title: str
    text: str
    score: float
    url: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "title": self.title, "text": self.text, "score": self.score, "url": self.url}


@dataclass(frozen=True, slots=True)
class BuildReport:
    path: Path
    n_docs: int
    dense: bool
    build_s: float


def build_index(corpus: str | Path, out: str | Path, *, dense: bool = False) -> BuildReport:
    """Index the JSONL corpus at `corpus` into the folder `out` (replacing an index already there)."""
    started = time.perf_counter()
    source = Path(corpus)
    docs = read_corpus(source)
    target = Path(out)
    if target.exists() and not (target / "manifest.json").is_file() and any(target.iterdir()):
        raise ConfigError(f"{target} exists and is not a search index; choose an empty or new folder for --out")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        with (staging / "docs.jsonl").open("w", encoding="utf-8") as handle:
            for doc in docs:
                handle.write(json.dumps(doc.to_json(), ensure_ascii=False) + "\n")
        _build_bm25(docs, staging / "bm25")
        dense_info = None
        if dense:
            from orchestra.search.dense import MODEL_NAME, Encoder

            vectors = Encoder.bundled().encode([_index_text(d) for d in docs])
            np.save(staging / "dense.npy", vectors)
            dense_info = {"model": MODEL_NAME, "dim": int(vectors.shape[1])}
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "n_docs": len(docs),
            "source": str(source), "source_sha256": file_sha256(source),
            "docs_sha256": file_sha256(staging / "docs.jsonl"),
            "stemmer": "english" if _stemmer() is not None else None, "stopwords": "en", "dense": dense_info,
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return BuildReport(target, len(docs), dense, time.perf_counter() - started)


class SearchIndex:
    """A loaded index. Thread-safe for queries (after load, only the snippet cache is written: idempotent entries)."""

    def __init__(self, path: Path, docs: Sequence[Doc], retriever: Any, vectors: np.ndarray | None,
                 manifest: dict[str, Any]):
        self.path = path
        self.docs = docs
        self.manifest = manifest
        self._retriever = retriever
        self._vectors = vectors
        self._encoder: Any = None
        self._stemmed = bool(manifest.get("stemmer"))
        self._snippets: dict[int, tuple[str, str, str, str]] = {}
        """doc index -> (id, title, snippet, url), made on first use: cutting the snippet per hit cost as much as
        scoring a query."""

    @property
    def has_dense(self) -> bool:
        return self._vectors is not None

    @classmethod
    def load(cls, path: str | Path) -> SearchIndex:
        """Load the index folder at `path`; a missing, foreign or other-version folder is a `ConfigError`."""
        folder = Path(path)
        manifest = read_manifest(folder)
        docs_file = folder / "docs.jsonl"
        if not docs_file.is_file() or file_sha256(docs_file) != manifest.get("docs_sha256"):
            raise ConfigError(f"search index {folder}: docs.jsonl is missing or does not match the manifest; "
                              f"rebuild it with `orchestra index build --corpus CORPUS --out {folder}`")
        if manifest.get("stemmer") and _stemmer() is None:
            raise ConfigError(f"search index {folder} was built with English stemming, which needs PyStemmer: "
                              "`pip install PyStemmer` (or `pip install orchestra[search]`)")
        with docs_file.open(encoding="utf-8") as handle:
            docs = [Doc(**json.loads(line)) for line in handle]
        import bm25s

        try:
            retriever = bm25s.BM25.load(str(folder / "bm25"), mmap=False)
            vectors = np.load(folder / "dense.npy") if manifest.get("dense") else None
        except (OSError, ValueError, KeyError) as exc:
            raise ConfigError(f"search index {folder} is incomplete or damaged ({type(exc).__name__}: {exc}); "
                              f"rebuild it with `orchestra index build --corpus CORPUS --out {folder}`") from None
        if vectors is not None and vectors.shape[0] != len(docs):
            raise ConfigError(f"search index {folder}: dense.npy has {vectors.shape[0]} rows for {len(docs)} "
                              f"documents; rebuild it with `orchestra index build --dense --out {folder} ...`")
        return cls(folder, docs, retriever, vectors, manifest)

    def search(self, query: str, k: int = 5, mode: Mode | None = None) -> list[Hit]:
        return self.search_many([query], k, mode)[0]

    def search_many(self, queries: Sequence[str], k: int = 5, mode: Mode | None = None) -> list[list[Hit]]:
        """The top `k` hits of each query, best first; one bm25s call and one encoder batch for all queries."""
        if not 1 <= k <= MAX_K:
            raise ValueError(f"k must be between 1 and {MAX_K}, got {k}")
        if mode not in (None, "bm25", "dense", "hybrid"):
            raise ValueError(f"mode must be bm25, dense or hybrid, got {mode!r}")
        mode = mode or ("hybrid" if self.has_dense else "bm25")
        if mode != "bm25" and not self.has_dense:
            raise ValueError(f"mode {mode!r} needs a dense index; rebuild {self.path} with --dense")
        depth = k if mode != "hybrid" else min(len(self.docs), max(4 * k, 50))
        sparse = self._bm25(queries, depth) if mode != "dense" else None
        dense = self._dense(queries, depth) if mode != "bm25" else None
        results = []
        for i, query in enumerate(queries):
            if not query.strip():
                results.append([])
                continue
            if sparse is not None and dense is not None:
                ranked = fuse_rrf([sparse[i], dense[i]])[:k]
            else:
                ranked = (sparse or dense or [])[i][:k]
            results.append([self._hit(doc, score) for doc, score in ranked])
        return results

    def _bm25(self, queries: Sequence[str], k: int) -> list[list[tuple[int, float]]]:
        """bm25s scores each query; the top k are selected among the documents that match at all. Selecting among
        all documents (mostly zeros) is what makes `BM25.retrieve` slow: numpy's partition degrades on ties."""
        out = []
        for query in queries:
            ids = self._retriever.get_tokens_ids(query_tokens(query, stemmed=self._stemmed))
            if not ids:
                out.append([])
                continue
            scores = self._retriever.get_scores_from_ids(ids)
            matched = np.flatnonzero(scores > 0)
            if len(matched) > k:
                matched = matched[np.argpartition(-scores[matched], k - 1)[:k]]
            order = matched[np.lexsort((matched, -scores[matched]))]  # score, then index order, like a stable sort
            out.append([(int(d), float(scores[d])) for d in order])
        return out

    def _dense(self, queries: Sequence[str], k: int) -> list[list[tuple[int, float]]]:
        assert self._vectors is not None
        if self._encoder is None:
            from orchestra.search.dense import Encoder

            self._encoder = Encoder.bundled()
        scores = self._encoder.encode(list(queries)) @ self._vectors.T
        depth = min(k, len(self.docs))
        top = np.argpartition(-scores, depth - 1, axis=1)[:, :depth]
        out = []
        for row, cand in zip(scores, top, strict=True):
            order = cand[np.argsort(-row[cand])]
            out.append([(int(d), float(row[d])) for d in order])
        return out

    def _hit(self, index: int, score: float) -> Hit:
        fixed = self._snippets.get(index)
        if fixed is None:
            doc = self.docs[index]
            text = doc.text if len(doc.text) <= SNIPPET_CHARS else doc.text[:SNIPPET_CHARS].rstrip() + " ..."
            fixed = self._snippets[index] = (doc.id, doc.title, text, doc.url)
        return Hit(id=fixed[0], title=fixed[1], text=fixed[2], score=round(score, 6), url=fixed[3])


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of the index folder `folder`, checked for this format and version."""
    rebuild = f"build it with `orchestra index build --corpus CORPUS --out {folder}`"
    manifest_file = folder / "manifest.json"
    if not folder.is_dir():
        raise ConfigError(f"search index {folder} does not exist; {rebuild}")
    if not manifest_file.is_file():
        raise ConfigError(f"{folder} is not a search index (no manifest.json); {rebuild}")
    try:
        manifest = json.loads(manifest_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ConfigError(f"search index {folder}: manifest.json is not valid JSON; re{rebuild}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ConfigError(f"{folder} is not an orchestra search index (manifest format); {rebuild}")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ConfigError(f"search index {folder} has format version {version}, this orchestra reads version "
                          f"{FORMAT_VERSION}; re{rebuild}")
    return manifest


def fuse_rrf(rankings: Sequence[Sequence[tuple[int, float]]]) -> list[tuple[int, float]]:
    """Reciprocal-rank fusion of ranked (doc, score) lists: sum of 1 / (RRF_K + rank); ties keep first-seen order."""
    fused: dict[int, float] = {}
    for ranking in rankings:
        for rank, (doc, _) in enumerate(ranking, start=1):
            fused[doc] = fused.get(doc, 0.0) + 1.0 / (RRF_K + rank)
    return sorted(fused.items(), key=lambda item: -item[1])


def query_tokens(text: str, *, stemmed: bool = True) -> list[str]:
    """The terms of `text` exactly as the index's bm25s tokenization makes them (stemmed as the index was)."""
    from bm25s.stopwords import STOPWORDS_EN

    stem = _stem_fn() if stemmed else str
    return [stem(t) for t in _TOKEN.findall(text.lower()) if t not in STOPWORDS_EN]


def _build_bm25(docs: Sequence[Doc], folder: Path) -> None:
    import bm25s

    tokens = bm25s.tokenize([_index_text(d) for d in docs], stopwords="en", stemmer=_stemmer(),
                            show_progress=False)
    retriever = bm25s.BM25()
    retriever.index(tokens, show_progress=False)
    retriever.save(str(folder), show_progress=False)


def _index_text(doc: Doc) -> str:
    return f"{doc.title}\n{doc.text}" if doc.title else doc.text


@lru_cache(maxsize=1)
def _stemmer() -> Any:
    """PyStemmer's English Snowball stemmer (compiled, no data files), or None where it is not installed."""
    try:
        import Stemmer
    except ImportError:
        return None
    return Stemmer.Stemmer("english")


@lru_cache(maxsize=1)
def _stem_fn() -> Any:
    """A cached stem function; PyStemmer objects are not thread-safe, so a miss stems under a lock."""
    stemmer = _stemmer()
    if stemmer is None:
        return str
    lock = threading.Lock()

    @lru_cache(maxsize=65536)
    def stem(word: str) -> str:
        with lock:
            return stemmer.stemWord(word)

    return stem
