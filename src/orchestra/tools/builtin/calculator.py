"""calculator: exact arithmetic for the orchestrator, with no code execution.

The expression is parsed with `ast` and only numeric literals, + - * / // % ** and unary signs, parentheses and a
few math functions are evaluated; anything else (names, attributes, calls to other functions) is refused with an error
the model can read. Exponents and results are bounded so a call cannot exhaust memory or time.
"""

from __future__ import annotations

import ast
import math
import operator

from orchestra.tools.spec import CostCard, Tool, tool

_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS = {"sqrt": math.sqrt, "log": math.log, "exp": math.exp, "sin": math.sin, "cos": math.cos,
              "tan": math.tan, "abs": abs, "round": round}
_CONSTANTS = {"pi": math.pi, "e": math.e}
MAX_EXPONENT = 10_000
MAX_MAGNITUDE = 10**300


def calculate(expression: str) -> str:
    """Evaluate an arithmetic expression exactly (e.g. `(17 * 23) / 4`, `sqrt(2) ** 2`).

    Args:
        expression: the arithmetic expression; numbers, + - * / // % **, parentheses, sqrt, log, exp, sin, cos,
            tan, abs, round, pi, e
    """
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"not an arithmetic expression: {exc.msg}") from None
    value = _eval(tree.body)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def _eval(node: ast.AST) -> int | float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise ValueError(f"exponent {right} is too large")
        value = _BINARY[type(node.op)](left, right)
        if abs(value) > MAX_MAGNITUDE:
            raise ValueError("result is too large")
        return value
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS
            and not node.keywords):
        return _FUNCTIONS[node.func.id](*(_eval(a) for a in node.args))
    raise ValueError(f"unsupported element in expression: {ast.dump(node)[:60]}")


def calculator_tool() -> Tool:
    return tool(calculate, name="calculator", cost=CostCard(), kind="basic", timeout_s=5.0)
