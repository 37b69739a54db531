"""Tools: what the orchestrator can call. A tool is a typed function plus a cost card (see `spec.py`)."""

from orchestra.tools.spec import CostCard, Tool, ToolKind, ToolOutput, ToolSpec, tool
from orchestra.tools.toolbox import Toolbox

__all__ = ["CostCard", "Tool", "ToolKind", "ToolOutput", "ToolSpec", "Toolbox", "tool"]
