"""Local search over a real corpus: orchestra's index against bm25s used directly, and the HTTP service under load.

Corpus: the reStructuredText sources of the Python 3.11 documentation as Debian ships them
(`apt-get install -y python3.11-doc` puts them under /usr/share/doc/python3.11/html/_sources; about 500 files,
1.4M words). Each file is split at its section headings and each section into passages of at most
`--words-per-doc` words; a passage's title is the file and section heading.

Measured, in one run on the same machine:
1. build: `orchestra.search.build_index` (read and check the JSONL, tokenize, index, write the folder with its
   manifest and digests) next to bm25s directly (tokenize + index in memory, with the same stemmer and stopwords);
2. query latency, k=5, over `--queries` section headings sampled with a fixed seed: `SearchIndex.search` (our
   tokenizer, bm25s retrieval, `Hit` records with snippets) next to the plain bm25s calls (`bm25s.tokenize` then
   `BM25.retrieve`), interleaved query by query (alternating which goes first) so both see the same machine load;
3. the service: `orchestra index serve` in a subprocess on 127.0.0.1, 32 concurrent callers each sending one query
   after another, latency per query as the caller sees it, with `orchestra.search.client.SearchClient` in two
   shapes: (a) the callers share one client, as the rollouts of one process share the pool's `local_search` tool
   (their concurrent queries are coalesced into multi-query requests); (b) 32 separate clients, one connection and
   one query per request each (32 processes would look like this, less the client processes' own CPU).
   Client and server share this machine's cores. Also printed: the CPU seconds per request of the service process
   (from /proc) and of the bench process's clients, and the load average before and after (the machine is shared).
Targets: our query p50 / bm25s p50 <= 1.2; service p50 under 32 clients < 10 ms.

Optionally (`--dense`): the first `--dense-docs` passages with dense embeddings (all-MiniLM-L6-v2 from its wheel),
build time and hybrid query latency (one query embedding, BM25, reciprocal-rank fusion).

Usage: `python bench/search.py [--queries 300] [--rounds 3] [--requests-per-client 30] [--words-per-doc 200]
[--dense [--dense-docs 500]]`.
The last line printed is `ratio=<our query p50 / bm25s-direct query p50>`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOURCES = Path("/usr/share/doc/python3.11/html/_sources")
HEADING = re.compile(r"^([=\-~^*#\"'+`])\1{2,}\s*$")
ROLE = re.compile(r":[\w:]+:`~?([^`<]*?)(?:\s*<[^>]*>)?`")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests-per-client", type=int, default=30)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--words-per-doc", type=int, default=200)
    parser.add_argument("--dense", action="store_true", help="also build a dense index and time hybrid queries")
    parser.add_argument("--dense-docs", type=int, default=500, help="passages in the dense index (embedding 200-word "
                        "passages on 2 CPU cores is slow; the whole corpus takes many minutes)")
    args = parser.parse_args()
    if not SOURCES.is_dir():
        sys.exit(f"bench/search.py: corpus {SOURCES} not found; install it with `apt-get install -y python3.11-doc`")

    import bm25s
    import Stemmer

    from orchestra.search.index import SearchIndex, build_index

    work = Path(tempfile.mkdtemp(prefix="orchestra-search-bench-"))
    docs, headings = python_docs(args.words_per_doc)
    corpus = work / "docs.jsonl"
    corpus.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    words = sum(len(d["text"].split()) for d in docs)
    print(f"corpus: {len(docs)} passages, {words / 1e6:.2f}M words, {corpus.stat().st_size / 1e6:.1f} MB "
          f"from {SOURCES}")

    started = time.perf_counter()
    report = build_index(corpus, work / "index")
    ours_build_s = time.perf_counter() - started
    stemmer = Stemmer.Stemmer("english")
    started = time.perf_counter()
    texts = [f"{d['title']}\n{d['text']}" for d in docs]
    peer = bm25s.BM25()
    peer.index(bm25s.tokenize(texts, stopwords="en", stemmer=stemmer, show_progress=False), show_progress=False)
    peer_build_s = time.perf_counter() - started
    print(f"build: ours {ours_build_s:.2f} s (incl. reading, checks, writing the folder), "
          f"bm25s direct {peer_build_s:.2f} s (in memory)")

    index = SearchIndex.load(report.path)
    queries = random.Random(0).sample(headings, min(args.queries, len(headings)))

    def ours(q: str) -> object:
        return index.search(q, k=5)

    def direct(q: str) -> object:
        tokens = bm25s.tokenize([q], stopwords="en", stemmer=stemmer, show_progress=False)
        return peer.retrieve(tokens, k=5, show_progress=False)

    agree = sum(_same_top(index.search(q, k=5), direct(q), docs) for q in queries)
    ours_ms, peer_ms = interleaved(queries, ours, direct, args.rounds)
    print(f"query k=5 ({len(ours_ms)} timed each): ours p50 {pct(ours_ms, 50):.3f} ms p95 {pct(ours_ms, 95):.3f} ms; "
          f"bm25s direct p50 {pct(peer_ms, 50):.3f} ms p95 {pct(peer_ms, 95):.3f} ms; "
          f"same top hit on {agree}/{len(queries)} queries")

    if args.dense:
        subset = work / "docs-dense.jsonl"
        subset.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs[:args.dense_docs]))
        import torch

        torch.set_num_threads(1)  # as `orchestra index serve` does for a dense index (see there why)
        dense_report = build_index(subset, work / "index-dense", dense=True)
        hybrid = SearchIndex.load(dense_report.path)
        hybrid.search(queries[0], k=5)  # load the encoder before timing
        hybrid_ms = []
        for q in queries:
            started = time.perf_counter()
            hybrid.search(q, k=5, mode="hybrid")
            hybrid_ms.append((time.perf_counter() - started) * 1e3)
        print(f"dense: {dense_report.n_docs} passages, build {dense_report.build_s:.1f} s "
              f"({dense_report.n_docs / dense_report.build_s:.1f} passages/s incl. BM25), hybrid query p50 {pct(hybrid_ms, 50):.2f} ms p95 {pct(hybrid_ms, 95):.2f} ms")

    print(f"load average before the service runs: {_load_average()}")
    loads = asyncio.run(service_load(report.path, queries, args.clients, args.requests_per_client))
    for name, shape in (("shared", "callers sharing one client (rollouts of one process)"),
                        ("separate", "separate clients, one connection and one query per request")):
        latencies, wall_s, stats = loads[name]
        print(f"service, {args.clients} concurrent {shape}: {len(latencies)} queries in {stats['requests']} "
              f"requests, p50 {pct(latencies, 50):.2f} ms p95 {pct(latencies, 95):.2f} ms, "
              f"{len(latencies) / wall_s:.0f} queries/s; CPU per request: service "
              f"{stats['server_cpu_ms_per_request']:.3f} ms, clients {stats['client_cpu_ms_per_request']:.3f} ms")
    print(f"load average after: {_load_average()} ({os.cpu_count()} cores; the machine is shared)")
    ratio = pct(ours_ms, 50) / pct(peer_ms, 50)
    print(f"targets: query ratio {ratio:.2f} (<= 1.2); service p50 under {args.clients} clients < 10 ms: shared "
          f"{pct(loads['shared'][0], 50):.2f} ms, separate {pct(loads['separate'][0], 50):.2f} ms")
    print(f"ratio={ratio:.3f}")


def python_docs(max_words: int) -> tuple[list[dict[str, str]], list[str]]:
    """Passages of the Python docs (id, title, text, url) and every section heading (the query pool)."""
    docs: list[dict[str, str]] = []
    headings: list[str] = []
    for file in sorted(SOURCES.rglob("*.rst.txt")):
        page = str(file.relative_to(SOURCES))[: -len(".rst.txt")]
        for heading, body in _sections(file.read_text(encoding="utf-8", errors="replace")):
            if len(heading.split()) >= 2:
                headings.append(heading)
            words = body.split()
            for start in range(0, len(words), max_words):
                docs.append({"id": f"{page}#{len(docs)}", "title": f"{page}: {heading}",
                             "text": " ".join(words[start:start + max_words]),
                             "url": f"https://docs.python.org/3.11/{page}.html"})
    return docs, headings


def _sections(text: str) -> list[tuple[str, str]]:
    lines = text.splitlines()
    sections: list[tuple[str, list[str]]] = [("", [])]
    for i, line in enumerate(lines):
        if HEADING.match(line) and i > 0 and lines[i - 1].strip() and not HEADING.match(lines[i - 1]):
            heading = sections[-1][1].pop() if sections[-1][1] else lines[i - 1]
            sections.append((ROLE.sub(r"\1", heading).strip(), []))
        elif not HEADING.match(line):
            sections[-1][1].append(line)
    return [(h, "\n".join(body)) for h, body in sections if "".join(body).strip()]


def interleaved(queries: list[str], ours, direct, rounds: int) -> tuple[list[float], list[float]]:
    for q in queries[:20]:  # warm caches (stems, pages) on both sides
        ours(q)
        direct(q)
    ours_ms: list[float] = []
    peer_ms: list[float] = []
    for r in range(rounds):
        for i, q in enumerate(queries):
            pair = [(ours, ours_ms), (direct, peer_ms)]
            for fn, out in pair if (i + r) % 2 == 0 else reversed(pair):
                started = time.perf_counter()
                fn(q)
                out.append((time.perf_counter() - started) * 1e3)
    return ours_ms, peer_ms


async def service_load(index_dir: Path, queries: list[str], clients: int,
                       per_client: int) -> dict[str, tuple[list[float], float, dict[str, float]]]:
    """Per-query latencies, wall time and service stats for both client shapes, against one served index."""
    from orchestra.search.client import SearchClient

    port = _free_port()
    server = subprocess.Popen([sys.executable, "-c", "from orchestra.cli import app; app()", "index", "serve",
                               str(index_dir), "--port", str(port)], stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        await _wait_up(url, server)
        shared = SearchClient(url, timeout_s=30)
        separate = [SearchClient(url, timeout_s=30) for _ in range(clients)]
        return {"shared": await _load(url, server.pid, [shared] * clients, queries, per_client),
                "separate": await _load(url, server.pid, separate, queries, per_client)}
    finally:
        server.terminate()
        server.wait(10)


async def _load(url: str, server_pid: int, clients: list, queries: list[str],
                per_client: int) -> tuple[list[float], float, dict[str, float]]:
    """Each caller sends `per_client` queries one after another; all callers at once."""
    from orchestra.search.client import SearchClient

    latencies: list[float] = []

    async def caller(n: int, client: SearchClient) -> None:
        await client.search(queries[n % len(queries)], k=5)  # connect before timing
        for i in range(per_client):
            started = time.perf_counter()
            await client.search(queries[(n * per_client + i) % len(queries)], k=5)
            latencies.append((time.perf_counter() - started) * 1e3)

    before = await _stats(url)
    server_cpu, client_cpu = _cpu_s(server_pid), time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(caller(n, c) for n, c in enumerate(clients)))
    wall_s = time.perf_counter() - started
    server_cpu, client_cpu = _cpu_s(server_pid) - server_cpu, time.process_time() - client_cpu
    after = await _stats(url)
    requests = after["requests"] - before["requests"]
    stats = {"requests": requests, "max_batch_queries": after["max_batch_queries"],
             "server_cpu_ms_per_request": 1e3 * server_cpu / requests,
             "client_cpu_ms_per_request": 1e3 * client_cpu / requests}
    return latencies, wall_s, stats


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _stats(url: str) -> dict[str, int]:
    import httpx2

    async with httpx2.AsyncClient() as http:
        return (await http.get(f"{url}/stats")).json()


async def _wait_up(url: str, server: subprocess.Popen) -> None:
    import httpx2 as httpx

    deadline = time.monotonic() + 60
    async with httpx.AsyncClient(timeout=2) as http:
        while time.monotonic() < deadline:
            if server.poll() is not None:
                sys.exit(f"bench/search.py: `orchestra index serve` exited with {server.returncode}")
            try:
                if (await http.get(f"{url}/health")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.2)
    sys.exit("bench/search.py: the search service did not start within 60 s")


def _same_top(hits: list, peer_result, docs: list[dict[str, str]]) -> bool:
    peer_docs, peer_scores = peer_result
    if not hits:
        return float(peer_scores[0][0]) == 0.0
    return hits[0].id == docs[int(peer_docs[0][0])]["id"]


def _load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


if __name__ == "__main__":
    main()
