"""Runtime overhead of `run_episode` over OpenAICompatBackend, against a direct `openai` SDK call to the same server.

The scripted OpenAI-compatible server runs in its own process and answers instantly (turn 1: a structured tool call
to `echo`; after a tool result: a final answer), so what is measured is client-side cost: prompt building, request
encoding, HTTP, parsing, tool dispatch, budget bookkeeping and trajectory assembly.

1. Latency: p50 per turn of sequential episodes (episode wall time / turns) versus p50 of a direct
   `AsyncOpenAI().chat.completions.create` call carrying the same first-turn messages and tools. A raw httpx2 POST is
   shown as the floor.
2. Throughput: 1,000 episodes started at once on one backend (100 pooled connections). Episodes/s, and which side
   bounds it: the CPU used by this process and by the server process over the run (a side near 100% of a core is the
   bound; CPU per request gives each side's capacity on one core), and what a bare httpx2 load generator reaches
   against the same server at the same concurrency. This is the runtime's own ceiling: the server costs nothing.
3. Against a model server: the same 1,000 episodes against a server whose completions take `--latency-s` (2 s)
   and of which at most `--slots` (256, vLLM's default `max_num_seqs`) run at once, the rest queueing, so the server
   can serve at most slots / latency requests/s. Requests/s reached as a share of that capacity: near 1.0 means the
   server, not the runtime, bounds the run.

Usage: `python bench/runtime_overhead.py [--episodes-seq 200] [--calls 400] [--concurrent 1000] [--latency-s 2]
[--slots 256]`.
The last line printed is `ratio=<ours_p50_per_turn / direct_p50_per_call>`.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import logging
import os
import statistics
import subprocess
import sys
import time
from collections import deque
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the scripted server lives under tests/

import httpx2  # noqa: E402
import openai  # noqa: E402

from orchestra.backends.openai_compat import OpenAICompatBackend  # noqa: E402
from orchestra.backends.pricing import ModelPrice  # noqa: E402
from orchestra.rollout.episode import run_episode  # noqa: E402
from orchestra.rollout.prompt import default_prompt  # noqa: E402
from orchestra.task import Task  # noqa: E402
from orchestra.tools.spec import tool  # noqa: E402
from orchestra.tools.toolbox import Toolbox  # noqa: E402


def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


TOOLBOX = Toolbox.of([tool(echo)])
TASK = Task("bench", "Say hi through the echo tool, then answer.")


def start_server(*extra: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "tests.servers.scripted_openai", "--script", "tool-then-answer",
                             *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    line = proc.stdout.readline() if proc.stdout else ""
    if not line.startswith("READY "):
        proc.kill()
        raise RuntimeError(f"scripted server did not start: {line!r}")
    return proc, line.split()[1]


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def backend(base_url: str, max_connections: int = 100) -> OpenAICompatBackend:
    return OpenAICompatBackend("bench", base_url, price=ModelPrice(0.0, 0.0), timeout_s=120.0,
                               max_connections=max_connections)


async def direct_p50_s(base_url: str, calls: int) -> float:
    client = openai.AsyncOpenAI(base_url=base_url, api_key="bench", max_retries=0)
    messages = [m.to_openai() for m in default_prompt(TASK, TOOLBOX.specs(), None)]
    tools = [s.to_openai() for s in TOOLBOX.specs()]
    times = []
    for i in range(calls + 20):
        started = time.perf_counter()
        await client.chat.completions.create(model="bench", messages=messages, tools=tools, max_tokens=512)
        if i >= 20:  # warm-up: connection, imports, first-call caches
            times.append(time.perf_counter() - started)
    await client.close()
    return statistics.median(times)


async def raw_p50_s(base_url: str, calls: int) -> float:
    messages = [m.to_openai() for m in default_prompt(TASK, TOOLBOX.specs(), None)]
    body = {"model": "bench", "messages": messages, "tools": [s.to_openai() for s in TOOLBOX.specs()]}
    times = []
    async with httpx2.AsyncClient() as client:
        for i in range(calls + 20):
            started = time.perf_counter()
            (await client.post(f"{base_url}/chat/completions", json=body)).json()
            if i >= 20:
                times.append(time.perf_counter() - started)
    return statistics.median(times)


async def ours_per_turn_s(base_url: str, episodes: int) -> tuple[float, float]:
    """(p50 of episode wall / turns, p50 of the turns' own latency_s) over sequential episodes."""
    orchestrator = backend(base_url)
    per_turn, turn_latency = [], []
    for i in range(episodes + 10):
        started = time.perf_counter()
        trajectory = await run_episode(TASK, orchestrator, TOOLBOX)
        elapsed = time.perf_counter() - started
        assert trajectory.final_answer == "done", trajectory.termination
        if i >= 10:
            per_turn.append(elapsed / len(trajectory.turns))
            turn_latency += [t.latency_s for t in trajectory.turns]
    await orchestrator.aclose()
    return statistics.median(per_turn), statistics.median(turn_latency)


async def concurrent_episodes(base_url: str, count: int, server_pid: int, max_connections: int = 100
                              ) -> dict[str, float]:
    orchestrator = backend(base_url, max_connections)
    await run_episode(TASK, orchestrator, TOOLBOX)  # warm the client
    cpu_client, cpu_server, started = time.process_time(), cpu_s(server_pid), time.perf_counter()
    trajectories = await asyncio.gather(*(run_episode(TASK, orchestrator, TOOLBOX) for _ in range(count)))
    wall = time.perf_counter() - started
    result = {
        "wall_s": wall,
        "finished": sum(t.final_answer == "done" for t in trajectories),
        "requests": sum(len(t.turns) for t in trajectories),
        "client_cpu": (time.process_time() - cpu_client) / wall,
        "server_cpu": (cpu_s(server_pid) - cpu_server) / wall,
    }
    await orchestrator.aclose()
    return result


async def bare_http_rps(base_url: str, requests: int, server_pid: int, concurrency: int = 100) -> tuple[float, float]:
    """(requests/s, server CPU share) for bare first-turn requests from httpx2, no episode logic on the client."""
    messages = [m.to_openai() for m in default_prompt(TASK, TOOLBOX.specs(), None)]
    body = {"model": "bench", "messages": messages}
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx2.AsyncClient(limits=limits, timeout=60) as client:
        gate = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with gate:
                await client.post(f"{base_url}/chat/completions", json=body)

        await asyncio.gather(*(one() for _ in range(concurrency)))
        cpu_server, started = cpu_s(server_pid), time.perf_counter()
        await asyncio.gather(*(one() for _ in range(requests)))
        wall = time.perf_counter() - started
        return requests / wall, (cpu_s(server_pid) - cpu_server) / wall


async def main(args: argparse.Namespace) -> None:
    logging.disable(logging.WARNING)
    proc, base_url = start_server()
    try:
        direct = await direct_p50_s(base_url, args.calls)
        raw = await raw_p50_s(base_url, args.calls)
        ours, ours_turn = await ours_per_turn_s(base_url, args.episodes_seq)
        print(f"direct openai SDK call      p50 {direct * 1e3:7.3f} ms  ({args.calls} calls)")
        print(f"raw httpx2 POST             p50 {raw * 1e3:7.3f} ms  (floor)")
        print(f"run_episode per turn        p50 {ours * 1e3:7.3f} ms  ({args.episodes_seq} episodes x 2 turns; "
              f"Turn.latency_s p50 {ours_turn * 1e3:.3f} ms)")
        print(f"overhead per turn vs direct     {(ours - direct) * 1e3:+7.3f} ms")
        load = await concurrent_episodes(base_url, args.concurrent, proc.pid)
        eps = load["finished"] / load["wall_s"]
        rps = load["requests"] / load["wall_s"]
        client_ms = 1e3 * load["client_cpu"] / rps
        server_ms = 1e3 * load["server_cpu"] / rps
        print(f"{args.concurrent} concurrent episodes: {load['finished']:.0f} finished in {load['wall_s']:.2f} s "
              f"= {eps:.0f} episodes/s ({rps:.0f} requests/s)")
        print(f"CPU over the run: runtime process {load['client_cpu']:.0%} of a core ({client_ms:.2f} ms/request), "
              f"server process {load['server_cpu']:.0%} of a core ({server_ms:.2f} ms/request)")
        print(f"server capacity on one core ~ {1e3 / server_ms:.0f} requests/s; runtime capacity on one core "
              f"~ {1e3 / client_ms:.0f} requests/s")
        bare_rps, bare_server = await bare_http_rps(base_url, 2 * args.concurrent, proc.pid)
        print(f"bare httpx2 load generator (concurrency 100): {bare_rps:.0f} requests/s with the server at "
              f"{bare_server:.0%} of a core (the HTTP client, not the server, limits it)")
        bound = "runtime (client process)" if load["client_cpu"] >= load["server_cpu"] else "server"
        print(f"bound by: {bound} (an instant server)")
        model_share = await against_model_server(args)
        print(f"ratio vs raw httpx2 floor: {ours / raw:.3f}")
        print(f"share of the model server's capacity reached: {model_share:.3f}")
        print(f"ratio={ours / direct:.3f}")
    finally:
        proc.terminate()
        proc.wait(10)


async def against_model_server(args: argparse.Namespace) -> float:
    """Part 3: requests/s reached against a latency- and slot-bound server, as a share of its capacity."""
    proc, base_url = start_server("--latency-s", str(args.latency_s), "--slots", str(args.slots))
    try:
        # As many connections as the server has slots (how a backend is sized for a vLLM server: its max_num_seqs);
        # the other episodes wait in the client's pool. More connections than that only add idle sockets to the pool.
        load = await concurrent_episodes(base_url, args.concurrent, proc.pid, max_connections=args.slots)
    finally:
        proc.terminate()
        proc.wait(10)
    rps = load["requests"] / load["wall_s"]
    capacity = args.slots / args.latency_s
    ideal = ideal_wall_s(args.concurrent, round(load["requests"] / args.concurrent), args.slots, args.latency_s)
    print(f"against a model server ({args.slots} slots x {args.latency_s:g} s per completion = {capacity:.0f} "
          f"requests/s at most): {load['finished']:.0f} episodes in {load['wall_s']:.2f} s = {rps:.0f} requests/s "
          f"({rps / capacity:.1%} of capacity; runtime process at {load['client_cpu']:.0%} of a core); a client "
          f"that costs nothing would take {ideal:.2f} s under the same queueing ({ideal / load['wall_s']:.1%} of it)")
    return rps / capacity


def ideal_wall_s(episodes: int, turns: int, slots: int, latency_s: float) -> float:
    """Wall time of `episodes` x `turns` sequential completions on a `slots`-wide server taking `latency_s` each,
    first come first served, with a client that adds no time: the server-bound floor of part 3."""
    queue = deque((e, 0) for e in range(episodes))
    running: list[tuple[float, int, int]] = []
    now = 0.0
    while queue or running:
        while queue and len(running) < slots:
            episode, turn = queue.popleft()
            heapq.heappush(running, (now + latency_s, episode, turn))
        now, episode, turn = heapq.heappop(running)
        if turn + 1 < turns:
            queue.append((episode, turn + 1))
    return now


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes-seq", type=int, default=200)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--concurrent", type=int, default=1000)
    parser.add_argument("--latency-s", type=float, default=2.0, help="Part 3: seconds per completion.")
    parser.add_argument("--slots", type=int, default=256, help="Part 3: completions the server runs at once.")
    asyncio.run(main(parser.parse_args()))
