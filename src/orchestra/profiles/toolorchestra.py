"""The protocol `nvidia/Orchestrator-8B` was trained on (REFERENCE.md sections 4 and 10), as a prompt profile.

A pool with `prompt: toolorchestra` and `paper_tools: {descriptions: release}` shows the model what it learned:
- system "You are good at using tools."; user `Problem: {q}`, a blank line, `Choose an appropriate tool.`;
- three tools `search`, `enhance_reasoning`, `answer` with one parameter `model` (an expert alias), described
  with the release's alias table of $ per million input/output tokens and average latency;
- the hermes `<tool_call>` format, which vLLM's `hermes` parser (or `orchestra.toolcalls`) reads;
- tool results as plain text (`orchestra.rollout.guard.plain`), no `<tool_output>` wrapper it never saw.

Departures from the release, on purpose:
- The release rebuilt the prompt every turn (problem + context + instruction). orchestra's message list only grows
  (training reuses its tokens), so the context arrives as tool results after the model's calls, which the Qwen3
  chat template renders as `<tool_response>` blocks; the experts still get problem + context, built by the tools.
- The release ran only the first valid call of a turn; orchestra runs every call of a turn (the model was trained
  to make one).
- The capability sentences in the descriptions are written here; the aliases, prices and latencies are the
  release's. Prices charged always come from the pool (the text stays as trained, so the model sees what it knew).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from orchestra.preferences import Preferences
from orchestra.task import Task
from orchestra.tools.builtin.paper_tools import SUMMARIES, Expert, describe_aliases
from orchestra.tools.spec import ToolSpec
from orchestra.types import Message

SYSTEM = "You are good at using tools."
INSTRUCTION = "Choose an appropriate tool."

RELEASE_TABLE: dict[str, tuple[str, str]] = {
    "search-1": ("$1.25/M input, $10/M output, ~22 s", "GPT-5: writes precise queries for hard, multi-hop needs."),
    "search-2": ("$0.25/M input, $2/M output, ~16 s", "GPT-5-mini: good queries at a fraction of the cost."),
    "search-3": ("$0.8/M input, $0.8/M output, ~8 s", "Qwen3-32B: fast, cheap queries for direct look-ups."),
    "reasoner-1": ("$1.25/M input, $10/M output, ~31 s", "GPT-5: strongest code for hard math and logic."),
    "reasoner-2": ("$0.25/M input, $2/M output, ~25 s", "GPT-5-mini: solid code for most computations."),
    "reasoner-3": ("$0.8/M input, $0.8/M output, ~9 s", "Qwen2.5-Coder-32B: quick code for routine calculations."),
    "answer-1": ("$1.25/M input, $10/M output, ~96 s", "GPT-5: the most capable generalist; slow and costly."),
    "answer-2": ("$0.25/M input, $2/M output, ~27 s", "GPT-5-mini: capable generalist at low cost."),
    "answer-3": ("$0.9/M input, $0.9/M output, ~15 s", "Llama-3.3-70B: general knowledge, fast."),
    "answer-4": ("$0.8/M input, $0.8/M output, ~11 s", "Qwen3-32B: general reasoning, fast and cheap."),
    "math-1": ("$0.9/M input, $0.9/M output, ~13 s", "Qwen2.5-Math-72B: competition math; short context."),
    "math-2": ("$0.2/M input, $0.2/M output, ~9 s", "Qwen2.5-Math-7B: simple math, cheapest; short context."),
}


def toolorchestra_prompt(task: Task, specs: Sequence[ToolSpec], preferences: Preferences | None) -> list[Message]:
    """The release's first messages. Tools travel as `tools=` (the chat template renders them); a task's own system
    text (e.g. a domain policy) and a preference instruction are appended when present."""
    system = SYSTEM + (f"\n\n{task.system}" if task.system else "")
    problem = f"Problem: {task.prompt}"
    if preferences is not None and preferences.describe():
        problem += "\n\n" + preferences.describe()
    return [Message("system", system), Message("user", f"{problem}\n\n{INSTRUCTION}")]


def release_descriptions(offered: Mapping[str, Mapping[str, Expert]]) -> dict[str, str]:
    """Tool name -> description in the release's shape: the summary, then one line per offered alias with the
    release's price/latency text and blurb (an alias the release did not have: the pool's prices and description)."""
    out = {}
    for name, experts in offered.items():
        lines = [SUMMARIES[name], "Models (`model` argument):"]
        for alias, expert in experts.items():
            if alias in RELEASE_TABLE:
                price, blurb = RELEASE_TABLE[alias]
                lines.append(f"- {alias}: {price}. {blurb}")
            else:
                lines.append(describe_aliases(name, {alias: expert}).splitlines()[-1])
        out[name] = "\n".join(lines)
    return out
