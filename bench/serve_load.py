"""Added latency of `orchestra serve` under a constant-rate open-model load, against calling its backend directly.

The backend is the scripted OpenAI-compatible server in its own process, answering after `--latency-s` (a model's
generation time); the orchestrator server (`orchestra serve`, another process, 127.0.0.1) runs one-turn episodes
over it (a pool with no tools: the orchestrator answers at once). The load generator sends requests at a fixed
rate whatever the responses do (open model: a slow server builds a queue instead of slowing the load down), first
straight to the backend with the exact messages an episode sends, then to the orchestrator server.

Printed: p50/p95 latency of both, the added latency (served - direct; target p50 <= 5 ms), the error rate of the
served phase (target < 1%), and on the last line `ratio=<served p50 / direct p50>`.
Bounded: `--rate` x `--seconds` requests per phase (default 25/s x 12 s = 300), 10 s per request.
Usage: `python bench/serve_load.py [--rate 25] [--seconds 12] [--latency-s 0.05]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the scripted server lives under tests/

import httpx2  # noqa: E402
import yaml  # noqa: E402

from orchestra.rollout.prompt import default_prompt  # noqa: E402
from orchestra.task import Task  # noqa: E402

QUESTION = "What is the capital of France?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_backend(latency_s: float) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.servers.scripted_openai", "--script", "ok",
                             "--latency-s", str(latency_s)], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("READY "):
        proc.kill()
        raise RuntimeError(f"scripted server did not start: {line!r}")
    return proc, line.split()[1]


def start_orchestra(backend_url: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    pool = workdir / "pool.yaml"
    pool.write_text(yaml.safe_dump({
        "orchestrator": {"kind": "openai", "model": "scripted", "base_url": backend_url, "max_attempts": 1,
                         "max_tokens": 64},
        "prices": {"models": {"scripted": {"input": 0.0, "output": 0.0, "provider": "bench"}}},
        "limits": {"max_turns": 2},
    }))
    port = free_port()
    log = (workdir / "serve.log").open("wb")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "orchestra"), "serve", "--pool", str(pool),
                             "--port", str(port), "--max-concurrent", "512"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            httpx2.get(f"{url}/models", timeout=1)
            return proc, url
        except httpx2.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("orchestra serve did not start: " + (workdir / "serve.log").read_text())


async def open_load(url: str, body: dict, rate: float, seconds: float, warmup: int = 20) -> tuple[list[float], int]:
    """Latencies of the successful requests and the number of failures, at `rate` requests/s."""
    latencies: list[float] = []
    failures = 0
    limits = httpx2.Limits(max_connections=512, max_keepalive_connections=512)
    async with httpx2.AsyncClient(timeout=10.0, limits=limits) as client:
        for _ in range(warmup):
            (await client.post(f"{url}/chat/completions", json=body)).raise_for_status()

        async def one() -> None:
            nonlocal failures
            started = time.perf_counter()
            try:
                response = await client.post(f"{url}/chat/completions", json=body)
                ok = response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "ok"
            except httpx2.HTTPError:
                ok = False
            if ok:
                latencies.append(time.perf_counter() - started)
            else:
                failures += 1

        tasks = []
        t0 = time.perf_counter()
        for i in range(int(rate * seconds)):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one()))
        await asyncio.gather(*tasks)
    return latencies, failures


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=25.0, help="Requests per second.")
    parser.add_argument("--seconds", type=float, default=12.0, help="Length of each phase.")
    parser.add_argument("--latency-s", type=float, default=0.05, help="The backend's time per completion.")
    args = parser.parse_args()
    backend, backend_url = start_backend(args.latency_s)
    with tempfile.TemporaryDirectory() as tmp:
        server, served_url = start_orchestra(backend_url, Path(tmp))
        try:
            # Exactly what one episode sends the backend: the orchestrator prompt for this question, no tools.
            direct_body = {"model": "scripted", "max_tokens": 64, "temperature": 0.0,
                           "messages": [m.to_openai() for m in default_prompt(Task("b", QUESTION), [], None)]}
            served_body = {"model": "scripted", "messages": [{"role": "user", "content": QUESTION}]}
            direct, direct_failures = asyncio.run(open_load(backend_url, direct_body, args.rate, args.seconds))
            served, failures = asyncio.run(open_load(served_url, served_body, args.rate, args.seconds))
        finally:
            server.terminate()
            server.wait(15)
            backend.terminate()
            backend.wait(15)
    total = len(served) + failures
    d50, d95, s50, s95 = (pct(direct, 50), pct(direct, 95), pct(served, 50), pct(served, 95))
    print(f"load: {args.rate:g} requests/s for {args.seconds:g} s per phase; backend latency {args.latency_s * 1e3:.0f} ms")
    print(f"direct to the backend: p50 {d50 * 1e3:.2f} ms, p95 {d95 * 1e3:.2f} ms ({direct_failures} failed)")
    print(f"through orchestra serve: p50 {s50 * 1e3:.2f} ms, p95 {s95 * 1e3:.2f} ms")
    print(f"added latency: p50 {(s50 - d50) * 1e3:.2f} ms (target <= 5 ms), p95 {(s95 - d95) * 1e3:.2f} ms")
    print(f"error rate: {failures}/{total} = {failures / max(1, total):.2%} (target < 1%)")
    print(f"ratio={s50 / d50:.4f}")


if __name__ == "__main__":
    main()
