"""`orchestra index build|query|serve`: results as JSON lines, one clear error line for bad input, a real server."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx
from typer.testing import CliRunner

from orchestra.commands.index import app
from tests.test_search import write_corpus

runner = CliRunner()
CLI = [sys.executable, "-c", "from orchestra.cli import app; app()"]


def test_build_then_query_prints_json_hits(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "docs.jsonl")
    built = runner.invoke(app, ["build", "--corpus", str(corpus), "--out", str(tmp_path / "idx")])
    assert built.exit_code == 0, built.output
    assert built.output.startswith("indexed 7 documents (bm25) into")
    result = runner.invoke(app, ["query", "Москва", "--index", str(tmp_path / "idx"), "--k", "2"])
    assert result.exit_code == 0, result.output
    hits = [json.loads(line) for line in result.output.splitlines()]
    assert [h["id"] for h in hits] == ["moscow"]


def test_bad_input_is_one_error_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "ok"}\n{"id": "b"}\n')
    cases = [
        (["build", "--corpus", str(bad), "--out", str(tmp_path / "idx")], "bad.jsonl:2: `text` must be a string"),
        (["query", "x", "--index", str(tmp_path / "nope")], "does not exist; build it with `orchestra index build"),
        (["query", "x"], "give exactly one of --index or --url"),
        (["query", "x", "--index", str(tmp_path), "--mode", "fuzzy"], "--mode: 'fuzzy' is not one of"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.output


def test_serve_binds_loopback_and_answers_the_query_command(tmp_path: Path) -> None:
    runner.invoke(app, ["build", "--corpus", str(write_corpus(tmp_path / "docs.jsonl")), "--out",
                        str(tmp_path / "idx")])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([*CLI, "index", "serve", str(tmp_path / "idx"), "--port", str(port)],
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert _listening_address(port) == "127.0.0.1"
        result = runner.invoke(app, ["query", "hashable keys", "--url", f"http://127.0.0.1:{port}", "--k", "1"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["id"] == "dicts"
    finally:
        server.terminate()
        server.wait(10)


def test_serve_on_a_missing_index_fails_with_one_line(tmp_path: Path) -> None:
    done = subprocess.run([*CLI, "index", "serve", str(tmp_path / "nope"), "--port", "1"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: search index {tmp_path / 'nope'} does not exist; build it with "
        f"`orchestra index build --corpus CORPUS --out {tmp_path / 'nope'}`"]


def _listening_address(port: int) -> str:
    """The local address of the socket listening on `port`, from /proc/net/tcp (IPv4)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        address, hex_port = fields[1].split(":")
        if int(hex_port, 16) == port and fields[3] == "0A":  # 0A: LISTEN
            return socket.inet_ntoa(bytes.fromhex(address)[::-1])
    raise AssertionError(f"nothing listens on port {port}")
