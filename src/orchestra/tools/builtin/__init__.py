"""Built-in tools, by name. The pool config refers to them through `BUILTINS` (one explicit table)."""

from __future__ import annotations

from collections.abc import Callable

from orchestra.tools.builtin.calculator import calculator_tool
from orchestra.tools.builtin.code_interpreter import code_interpreter_tool
from orchestra.tools.builtin.search import local_search_tool
from orchestra.tools.builtin.web_search import web_search_tool
from orchestra.tools.spec import Tool

BUILTINS: dict[str, Callable[..., Tool]] = {
    "calculator": calculator_tool,
    "code_interpreter": code_interpreter_tool,
    "local_search": local_search_tool,
    "web_search": web_search_tool,
}
