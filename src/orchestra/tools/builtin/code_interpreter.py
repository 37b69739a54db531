"""code_interpreter: run Python the orchestrator writes, in the process sandbox (`orchestra.sandbox`).

The sandbox is the boundary: the code is not filtered or rewritten, it simply has no network, no host files, no
host environment, and bounded time, memory, processes, file size and output. Every outcome is an observation the
model can act on: `status: ok` with the output, or `status: timeout | memory | error | killed` with the reason.

Cost: the wall seconds the sandbox ran x $8.3e-6 (the paper's sandbox price), measured by the sandbox's own clock
and stamped on the observation; the budget reserves the price of the whole time limit before the call.
Workspace: by default each call starts in an empty directory that is deleted afterwards. With `workspace_root`,
calls of one episode (one task id) share `workspace_root/<digest of the task id>`, so files persist between them;
the caller owns that directory and removes it when the episodes are done.
Cancellation: the tool is async (`run_python_async`): cancelling the call (an episode cancelled because its client
went away, or the toolbox's own timeout) kills the sandbox's processes at once instead of letting them run on.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal

from orchestra.sandbox import SandboxLimits, SandboxResult
from orchestra.sandbox.runner import run_python_async
from orchestra.tools.spec import CostCard, Tool, ToolContext, ToolOutput, tool

SANDBOX_USD_PER_SECOND = 8.3e-6


def code_interpreter_tool(
    wall_s: float = 10.0,
    memory_mib: int = 512,
    processes: int = 64,
    output_bytes: int = 16_384,
    workspace_root: str | None = None,
    backend: Literal["auto", "bwrap", "fallback"] = "auto",
    usd_per_second: float = SANDBOX_USD_PER_SECOND,
) -> Tool:
    """The tool; its options (all optional in a pool's `options:`) set the sandbox's limits, workspace and price
    (the default is the packaged price table's `python` entry)."""
    limits = SandboxLimits(wall_s=wall_s, memory_mib=memory_mib, processes=processes, output_bytes=output_bytes)
    card = CostCard(usd_per_second=usd_per_second, latency_s=1.0)

    async def code_interpreter(code: str, context: ToolContext) -> ToolOutput:
        """Run a Python 3 program in an isolated sandbox (no network, no internet, no host files) and return
        what it printed. Variables do not carry over between calls: print everything you need.

        Args:
            code: a complete Python program; print() the values you want to see
        """
        workspace = None if workspace_root is None else Path(workspace_root) / _digest(context.task_id)
        result = await run_python_async(code, limits, workspace=workspace, backend=backend)
        return ToolOutput(content=render_result(result), cost_usd=card.call_usd(seconds=result.duration_s),
                          is_error=not result.ok)

    def max_cost(_arguments: dict[str, object]) -> float:
        return card.call_usd(seconds=limits.wall_s + limits.grace_s + 1.0)

    return tool(code_interpreter, name="code_interpreter", cost=card, kind="basic",
                timeout_s=limits.wall_s + limits.grace_s + 5.0, max_cost=max_cost)


def render_result(result: SandboxResult) -> str:
    """What the model reads: the status line, then stdout and stderr (each only when non-empty)."""
    head = f"status: {result.status}" + (f" ({result.message})" if result.message else "")
    parts = [head]
    for name, text, truncated in (("stdout", result.stdout, result.stdout_truncated),
                                  ("stderr", result.stderr, result.stderr_truncated)):
        if text or truncated:
            note = " [truncated: only the beginning is shown]" if truncated else ""
            parts.append(f"{name}{note}:\n{text.rstrip()}")
    return "\n".join(parts)


def _digest(task_id: str) -> str:
    """A directory name for a task id that cannot traverse paths, whatever the id contains."""
    return hashlib.sha256(task_id.encode("utf-8", errors="replace")).hexdigest()[:24]
