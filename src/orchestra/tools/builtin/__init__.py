"""Built-in tools, by name. The pool config refers to them through `BUILTINS` (one explicit table)."""

from __future__ import annotations

from collections.abc import Callable

from orchestra.tools.builtin.calculator import calculator_tool
from orchestra.tools.spec import Tool

BUILTINS: dict[str, Callable[[], Tool]] = {
    "calculator": calculator_tool,
}
