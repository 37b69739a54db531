"""The paper's models-as-tools: `search`, `enhance_reasoning` and `answer`, each with one argument, `model`, an
expert alias (e.g. `search-1`, `reasoner-2`, `answer-1`, `math-1`) that the pool maps to any ChatBackend.

What each tool does with the chosen expert (the release's protocol, REFERENCE.md section 10):
- `search`: the expert reads the problem and the episode's context and writes a query in `<query>` tags (cut to
  `MAX_QUERY_CHARS`); the query goes to the pool's search tool (e.g. `local_search`); the documents come back.
- `enhance_reasoning`: the expert writes self-contained Python in a fenced block; it runs in the process sandbox
  (`orchestra.sandbox` via `run_python_async`; never unsandboxed, unlike the release), and the code with its output comes back.
- `answer`: the expert writes the final answer, marked `<answer>...</answer>` or `\\boxed{...}` (the last marked
  one counts; an unmarked reply is taken whole); the call is terminal, so the final answer is always the expert's.

Invariants
- The expert's prompt is the problem (`ToolContext.prompt`), the episode's context (every earlier tool result in
  `ToolContext.history`, oldest first) and the tool's instruction, capped at the alias's `max_context_chars`: the
  problem and instruction are kept whole and the context is cut from its oldest end to fit (the release
  left-truncates); a problem longer than the cap on its own is cut at its end.
- Cost of a call: the expert's completion at its backend's (the pool's) prices, plus the search tool's price or the
  sandbox seconds at `usd_per_second`; usage is the expert's. A failing expert is a `tool_error` observation carrying
  what it was still billed; the episode goes on.
- `Observation.target` is the alias's model, so per-model rewards and counts see which model did the work.
- `answer` carries `metadata["final_answer"]`: in an environment whose tasks bring their own `answer(text)` (qa),
  it replaces that tool (`orchestra.rollout.batch.task_tools`), so the final answer is still the expert's.
- The worst case reserved before a call is the chosen alias's bound for a full-cap prompt and its `max_tokens`, plus
  the search tool's worst case or the sandbox's whole time limit.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from orchestra.answers import last_group
from orchestra.backends.base import ChatBackend, Sampling, billed_cost_usd
from orchestra.errors import BackendError
from orchestra.sandbox import SandboxLimits
from orchestra.sandbox.runner import run_python_async
from orchestra.toolcalls import strip_think
from orchestra.tools.builtin.code_interpreter import SANDBOX_USD_PER_SECOND, render_result
from orchestra.tools.spec import CostCard, Tool, ToolContext, ToolOutput, ToolSpec
from orchestra.tools.toolbox import render_content
from orchestra.types import Completion, Message

PAPER_TOOL_NAMES = ("search", "enhance_reasoning", "answer")
MAX_QUERY_CHARS = 390
MAX_DOC_CHARS = 4_000
"""Each retrieved document is cut to this many characters (the release: 4,000 for FRAMES and training)."""

SEARCH_INSTRUCTION = ("Do not answer the problem. Write one search query that would find the information still "
                      "needed to solve it, inside <query></query> tags.")
CODE_INSTRUCTION = ("Write self-contained Python 3 code that computes what is needed to solve the problem, in one "
                    "```python fenced block. It runs with no network and no files; print() every result you need.")
ANSWER_INSTRUCTIONS = {
    "answer_tags": "Solve the problem. Write the final answer alone inside <answer></answer> tags.",
    "boxed": "Solve the problem. Write the final answer in \\boxed{}.",
}
SUMMARIES = {
    "search": "Search for missing knowledge: the chosen model writes a search query from the problem and the context "
              "so far, and the documents found are returned.",
    "enhance_reasoning": "Reason with code: the chosen model writes Python that runs in a sandbox; the code and its "
                         "output are returned.",
    "answer": "Give the final answer: the chosen model reads the problem and the context so far and writes the "
              "answer. This ends the task.",
}

_QUERY = re.compile(r"<query>(.*?)</query>", re.DOTALL)
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
_CODE = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Expert:
    """One alias: the backend it maps to (priced by the pool) and how it is consulted."""

    alias: str
    backend: ChatBackend
    max_context_chars: int = 120_000
    max_tokens: int = 1024
    description: str = ""
    latency_s: float = 0.0
    answer_format: Literal["answer_tags", "boxed"] = "answer_tags"
    timeout_s: float = 240.0
    """Wall limit of one expert completion including the backend's retries."""


def paper_tools(
    experts: Mapping[str, Expert],
    *,
    search: Sequence[str] = (),
    enhance_reasoning: Sequence[str] = (),
    answer: Sequence[str] = (),
    search_tool: Tool | None = None,
    search_k: int = 5,
    code_limits: SandboxLimits = SandboxLimits(wall_s=60.0),
    usd_per_second: float = SANDBOX_USD_PER_SECOND,
    descriptions: Mapping[str, str] | None = None,
) -> tuple[Tool, ...]:
    """The tools whose alias lists are non-empty, in the order search, enhance_reasoning, answer. `descriptions`
    replaces a tool's description (e.g. the text Orchestrator-8B was trained with); by default it is rendered from
    the aliases' prices, latencies and descriptions. `search` needs `search_tool`."""
    if search and search_tool is None:
        raise ValueError("the paper's `search` needs a search tool (e.g. local_search)")
    lists = {"search": search, "enhance_reasoning": enhance_reasoning, "answer": answer}
    for name, aliases in lists.items():
        missing = [a for a in aliases if a not in experts]
        if missing:
            raise ValueError(f"{name}: unknown expert alias(es) {', '.join(missing)}")
    runners = {
        "search": lambda e, ctx: _search(e, ctx, search_tool, search_k),  # type: ignore[arg-type]
        "enhance_reasoning": lambda e, ctx: _reason(e, ctx, code_limits, usd_per_second),
        "answer": _answer,
    }
    extra_worst = {
        "search": lambda: search_tool.max_cost_usd({"query": "q" * MAX_QUERY_CHARS}) if search_tool else 0.0,
        "enhance_reasoning": lambda: usd_per_second * (code_limits.wall_s + code_limits.grace_s + 1.0),
        "answer": lambda: 0.0,
    }
    extra_time = {"search": search_tool.timeout_s if search_tool else 0.0,
                  "enhance_reasoning": code_limits.wall_s + code_limits.grace_s + 5.0, "answer": 0.0}
    tools = []
    for name, aliases in lists.items():
        if not aliases:
            continue
        chosen = {a: experts[a] for a in aliases}
        text = (descriptions or {}).get(name) or describe_aliases(name, chosen)
        tools.append(_tool(name, text, chosen, runners[name], extra_worst[name], extra_time[name]))
    return tuple(tools)


def describe_aliases(name: str, experts: Mapping[str, Expert]) -> str:
    """The tool's summary and one line per alias: its prices (from the pool), typical latency and description."""
    lines = [SUMMARIES[name], "Models (`model` argument):"]
    for alias, e in experts.items():
        price = getattr(e.backend, "price", None)
        card = CostCard(price.input_usd_per_mtok, price.output_usd_per_mtok, latency_s=e.latency_s) if price else \
            CostCard(latency_s=e.latency_s)
        note = card.render() or "free"
        lines.append(f"- {alias}: {note}" + (f". {e.description}" if e.description else ""))
    return "\n".join(lines)


def expert_prompt(context: ToolContext, instruction: str, max_chars: int) -> str:
    """Problem, context and instruction within `max_chars` (see the module invariants for what is cut)."""
    problem = context.prompt or next((m.content for m in context.history if m.role == "user"), "")
    tail = f"\n\n{instruction}"
    head = f"Problem: {problem}"
    if len(head) + len(tail) > max_chars:
        head = head[: max(0, max_chars - len(tail))]
    gathered = "\n\n".join(m.content for m in context.history if m.role == "tool" and m.content)
    room = max_chars - len(head) - len(tail) - len("Context:\n\n\n")
    if not gathered or room <= 0:
        return head + tail
    if len(gathered) > room:
        marker = "[earlier context cut]\n"
        gathered = marker + gathered[len(gathered) - max(0, room - len(marker)):]
    return f"Context:\n{gathered}\n\n{head}{tail}"


def parse_query(text: str) -> str | None:
    found = _QUERY.findall(strip_think(text))
    return found[-1].strip()[:MAX_QUERY_CHARS] if found and found[-1].strip() else None


def parse_code(text: str) -> str | None:
    found = _CODE.findall(strip_think(text))
    return found[-1] if found and found[-1].strip() else None


def parse_answer(text: str) -> str:
    """The last `<answer>` content, else the last `\\boxed{}` content, else the whole reply (reasoning removed)."""
    visible = strip_think(text)
    tagged = _ANSWER.findall(visible)
    if tagged:
        return tagged[-1].strip()
    boxed = last_group(visible, "\\boxed")
    return boxed.strip() if boxed is not None else visible


def _tool(name: str, description: str, experts: Mapping[str, Expert], runner: Any, extra_worst: Any,
          extra_time_s: float) -> Tool:
    aliases = list(experts)
    parameters = {"type": "object", "properties": {"model": {
        "type": "string", "enum": aliases, "description": "The model to use: " + ", ".join(aliases)}},
        "required": ["model"]}
    spec = ToolSpec(name=name, description=description, parameters=parameters, kind="generalist")

    async def run(model: str, context: ToolContext) -> ToolOutput:
        return await runner(experts[model], context)

    def worst_case(arguments: dict[str, Any]) -> float:
        e = experts.get(str(arguments.get("model")))
        if e is None:
            return 0.0
        probe = [Message("user", "x" * e.max_context_chars)]
        return e.backend.max_cost_usd(probe, [], Sampling(max_tokens=e.max_tokens)) + extra_worst()

    timeout = max(e.timeout_s for e in experts.values()) + extra_time_s
    return Tool.from_schema(spec, run, timeout_s=timeout, max_cost=worst_case, context_param="context",
                            metadata={"final_answer": name == "answer"})


async def _consult(e: Expert, context: ToolContext, instruction: str) -> Completion | ToolOutput:
    """The expert's completion, or the error observation (with what was billed) when its endpoint failed."""
    prompt = expert_prompt(context, instruction, e.max_context_chars)
    try:
        return await e.backend.complete([Message("user", prompt)], [], Sampling(max_tokens=e.max_tokens))
    except BackendError as exc:
        return ToolOutput(f"error: {e.alias} failed: {type(exc).__name__}: {exc}",
                          cost_usd=billed_cost_usd(e.backend, exc), usage=exc.billed_usage, is_error=True,
                          target=e.backend.model)


async def _search(e: Expert, context: ToolContext, search_tool: Tool, k: int) -> ToolOutput:
    reply = await _consult(e, context, SEARCH_INSTRUCTION)
    if isinstance(reply, ToolOutput):
        return reply
    query = parse_query(reply.text)
    if query is None:
        return _expert_output(e, reply, f"error: {e.alias} wrote no <query>...</query>; nothing was searched",
                              is_error=True)
    properties = search_tool.spec.parameters.get("properties", {})
    started = time.perf_counter()
    try:
        arguments = search_tool.validate({"query": query, **({"k": k} if "k" in properties else {})})
        found = await asyncio.wait_for(search_tool.invoke(arguments, context), search_tool.timeout_s)
    except Exception as exc:  # noqa: BLE001 - a search failure is the orchestrator's information
        return _expert_output(e, reply, f"query by {e.alias}: {query}\nerror: search failed: "
                              f"{type(exc).__name__}: {exc}", is_error=True)
    out = found if isinstance(found, ToolOutput) else ToolOutput(found)
    search_cost = out.cost_usd if out.cost_usd is not None else \
        search_tool.spec.cost.call_usd(seconds=time.perf_counter() - started)
    return _expert_output(e, reply, f"query by {e.alias}: {query}\n{render_documents(out.content)}",
                          extra_usd=search_cost, is_error=out.is_error)


def render_documents(content: Any) -> str:
    """Search hits (dicts with `text` or `content`) as the release's `Documents:` block, each cut to
    `MAX_DOC_CHARS`; other results as text."""
    if isinstance(content, dict) and isinstance(content.get("results"), list):
        content = content["results"]
    if isinstance(content, list) and all(isinstance(h, dict) and ("text" in h or "content" in h) for h in content):
        if not content:
            return "Documents: none found"
        docs = [f"[{i}] {h.get('title') or h.get('id') or h.get('url', '')}\n"
                f"{str(h.get('text', h.get('content')))[:MAX_DOC_CHARS]}"
                for i, h in enumerate(content, 1)]
        return "Documents:\n" + "\n\n".join(docs)
    return render_content(content)


async def _reason(e: Expert, context: ToolContext, limits: SandboxLimits, usd_per_second: float) -> ToolOutput:
    reply = await _consult(e, context, CODE_INSTRUCTION)
    if isinstance(reply, ToolOutput):
        return reply
    code = parse_code(reply.text)
    if code is None:
        return _expert_output(e, reply, f"error: {e.alias} wrote no ```python block; nothing was run",
                              is_error=True)
    result = await run_python_async(code, limits)  # a cancelled episode kills the run
    text = f"code by {e.alias}:\n```python\n{code.rstrip()}\n```\n{render_result(result)}"
    return _expert_output(e, reply, text, extra_usd=usd_per_second * result.duration_s, is_error=not result.ok)


async def _answer(e: Expert, context: ToolContext) -> ToolOutput:
    reply = await _consult(e, context, ANSWER_INSTRUCTIONS[e.answer_format])
    if isinstance(reply, ToolOutput):
        return reply
    return _expert_output(e, reply, parse_answer(reply.text), terminal=True)


def _expert_output(e: Expert, reply: Completion, content: str, *, extra_usd: float = 0.0, is_error: bool = False,
                   terminal: bool = False) -> ToolOutput:
    return ToolOutput(content, cost_usd=reply.cost_usd + extra_usd, usage=reply.usage, terminal=terminal,
                      is_error=is_error, target=e.backend.model)
