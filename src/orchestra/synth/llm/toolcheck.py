"""Checking a model-written tool: static checks first, then probe calls in the sandbox against a copy of the DB.

`static_check(code, planned)` parses the code (never runs it) and rejects, with the first violation:
a syntax error; top-level statements other than imports, function definitions, constant assignments and a
docstring; imports outside `ALLOWED_IMPORTS`; any dunder name or attribute (`__class__`, `__import__`...); calls of
`BANNED_CALLS` (exec, eval, open, compile, getattr...); `global`/`nonlocal`, async code, classes; a missing function
of the planned name, or one whose parameters are not `db` then the planned ones, each annotated.

`sandbox_check(code, planned, db)` runs the code only after that, in the project's sandbox (`orchestra.sandbox`: no
network, rlimits, a wall-clock limit): a harness defines `ToolError`, embeds the database as JSON, appends the code
and calls the function once per probe on a fresh copy. The same probes run through the declared tool
(`orchestra.envs.tau.domains.derived`), and the code is accepted only when every probe agrees: it succeeds or raises
`ToolError` when the declared tool does, leaves the table as the declared tool does, and returns the record (lookup)
or the keys (search) it returns. Static checks keep obviously hostile code out of the sandbox and give countable
reasons; the sandbox is the boundary that holds if they miss something.
"""

from __future__ import annotations

import ast
import json
from typing import Any

from orchestra.envs.tau.domains import Db, ToolError
from orchestra.envs.tau.domains.derived import TableDef, ToolsFile, build_domain, get_path, record_view
from orchestra.sandbox import SandboxLimits
from orchestra.sandbox.runner import run_python_async
from orchestra.synth.llm.items import Rejected
from orchestra.synth.llm.toolplan import PlannedTool

ALLOWED_IMPORTS = frozenset({"json", "math", "re", "datetime", "copy", "string", "itertools", "collections",
                             "typing"})
BANNED_CALLS = frozenset({"exec", "eval", "open", "compile", "__import__", "getattr", "setattr", "delattr",
                          "globals", "locals", "vars", "input", "breakpoint", "exit", "quit", "help", "memoryview",
                          "classmethod", "staticmethod", "super", "type", "object"})
MAX_CODE_CHARS = 8000
LIMITS = SandboxLimits(wall_s=5.0, memory_mib=256, processes=8, output_bytes=256 * 1024)
MARKER = "@@PROBES@@"
MISSING = "NO-SUCH-KEY-0"


def static_check(code: str, planned: PlannedTool) -> None:
    """Raise `Rejected('static: ...')` at the first violation (see the module docstring)."""
    if len(code) > MAX_CODE_CHARS:
        raise Rejected("static: code too long")
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        raise Rejected("static: syntax error", f"line {exc.lineno}: {exc.msg}") from None
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant | ast.Tuple | ast.List | ast.Dict):
            continue
        if not isinstance(node, ast.Import | ast.ImportFrom | ast.FunctionDef):
            raise Rejected("static: top-level statement", type(node).__name__)
    for node in ast.walk(tree):
        _check_node(node)
    fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == planned.tool.name), None)
    if fn is None:
        raise Rejected("static: function missing", planned.tool.name)
    args = fn.args
    names = [a.arg for a in args.args + args.kwonlyargs]
    wanted = ["db", *(p.name for p in planned.tool.parameters)]
    if names != wanted or args.vararg or args.kwarg or args.posonlyargs:
        raise Rejected("static: wrong signature", f"{names} != {wanted}")
    if any(a.annotation is None for a in args.args[1:] + args.kwonlyargs):
        raise Rejected("static: unannotated parameter")


def _check_node(node: ast.AST) -> None:
    if isinstance(node, ast.Import | ast.ImportFrom):
        modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        bad = [m for m in modules if m.split(".")[0] not in ALLOWED_IMPORTS or getattr(node, "level", 0)]
        if bad:
            raise Rejected("static: import not allowed", ", ".join(bad))
    elif isinstance(node, ast.Attribute) and node.attr.startswith("__"):
        raise Rejected("static: dunder access", node.attr)
    elif isinstance(node, ast.Name) and node.id.startswith("__"):
        raise Rejected("static: dunder access", node.id)
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in BANNED_CALLS:
        raise Rejected("static: forbidden call", node.func.id)
    elif isinstance(node, ast.Global | ast.Nonlocal | ast.ClassDef | ast.AsyncFunctionDef | ast.Await | ast.AsyncFor
                    | ast.AsyncWith):
        raise Rejected("static: forbidden statement", type(node).__name__)
    elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "__" in node.value:
        raise Rejected("static: dunder access", "in a string")


async def sandbox_check(code: str, planned: PlannedTool, table: TableDef, db: dict[str, dict[str, Any]],
                        limits: SandboxLimits = LIMITS) -> None:
    """Raise `Rejected` unless the code behaves as the declared tool on every probe (see the module docstring)."""
    probes = make_probes(planned, table, db)
    expected = [_declared(planned, table, db, p) for p in probes]
    harness = _harness(code, planned.tool.name, planned.tool.table, db, probes)
    result = await run_python_async(harness, limits)
    if result.status != "ok" or MARKER not in result.stdout:
        raise Rejected(f"tool_sandbox: {result.status}", (result.stderr or result.message)[-600:])
    try:
        got = json.loads(result.stdout.split(MARKER, 1)[1])
    except json.JSONDecodeError:
        raise Rejected("tool_sandbox: unreadable output", result.stdout[-300:]) from None
    for i, (want, have) in enumerate(zip(expected, got, strict=True)):
        _compare(planned, i, probes[i], want, have)


def make_probes(planned: PlannedTool, table: TableDef, db: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Calls that exercise the tool's success and refusal paths on this database."""
    tool = planned.tool
    rows = db.get(tool.table, {})
    keys = sorted(rows)
    key_param = next((p.name for p in tool.parameters if p.field == table.key), "")
    if not keys:
        return []
    first = rows[keys[0]]
    if tool.kind == "lookup":
        return [{key_param: keys[0]}, {key_param: keys[-1]}, {key_param: MISSING}]
    if tool.kind == "search":
        field = (tool.parameters[0].enum or ("",))[0]
        value = str(get_path(first, field))
        return [{"field": field, "value": value.upper()}, {"field": field, "value": "no such value"}]
    if tool.kind == "update":
        value_param = tool.parameters[1]
        current = get_path(first, tool.field or "")
        options = [v for v in (value_param.enum or ()) if v != current] or ["new.address@example.com"
                                                                           if "email" in value_param.name
                                                                           else "+1 555 0100"]
        return [{key_param: keys[0], value_param.name: options[0]}, {key_param: keys[0], value_param.name: current},
                {key_param: MISSING, value_param.name: options[0]}]
    if tool.kind == "create":
        good: dict[str, Any] = {}
        for p in tool.parameters:
            ref = next((c.table for c in tool.constraints if c.type == "exists" and c.param == p.name), None)
            if ref is not None:
                good[p.name] = sorted(db.get(ref, {}) or [MISSING])[0]
            elif p.enum:
                good[p.name] = p.enum[0]
            elif p.type in ("integer", "number"):
                good[p.name] = 2
        bad = {**good, **{p.name: MISSING for p in tool.parameters[:1]}}
        return [good, bad]
    return [{key_param: k} for k in keys[:3]] + [{key_param: MISSING}]


def _declared(planned: PlannedTool, table: TableDef, db: dict[str, dict[str, Any]], probe: dict[str, Any]
              ) -> dict[str, Any]:
    spec = ToolsFile(domain="probe", tables={planned.tool.table: table}, tools=(planned.tool,))
    fn = build_domain(spec).agent_functions()[planned.tool.name]
    episode = Db(db)
    try:
        result = fn(episode, **probe)
    except ToolError as exc:
        return {"status": "error", "message": str(exc), "table": dict(episode.table(planned.tool.table))}
    return {"status": "ok", "result": result, "table": dict(episode.table(planned.tool.table))}


def _compare(planned: PlannedTool, i: int, probe: dict[str, Any], want: dict[str, Any], have: dict[str, Any]
             ) -> None:
    where = f"probe {i} {json.dumps(probe, default=str)}"
    if have.get("status") == "crash":
        raise Rejected(f"tool_crashed: {str(have.get('message', '')).split(':')[0]}",
                       f"{where}: {have.get('message')}")
    if have.get("status") != want["status"]:
        raise Rejected(f"tool_behaviour: {want['status']} expected", f"{where}: got {have.get('status')} "
                       f"({have.get('message', '')}); the declared tool: {want.get('message', 'ok')}")
    if _canonical(have.get("table")) != _canonical(want["table"]):
        raise Rejected("tool_behaviour: wrong database change", where)
    if want["status"] != "ok":
        return
    kind, result = planned.tool.kind, have.get("result")
    if kind == "lookup":
        view = record_view(want["result"])
        if not isinstance(result, dict) or any(result.get(k) != v for k, v in view.items()):
            raise Rejected("tool_behaviour: wrong result", f"{where}: {str(result)[:200]}")
    if kind == "search":
        expected = set(next(v for v in want["result"].values() if isinstance(v, list)))
        listed = result if isinstance(result, list) else next(
            (v for v in result.values() if isinstance(v, list)), None) if isinstance(result, dict) else None
        if listed is None or set(map(str, listed)) != expected:
            raise Rejected("tool_behaviour: wrong result", f"{where}: {str(result)[:200]}")


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _harness(code: str, name: str, table: str, db: dict[str, Any], probes: list[dict[str, Any]]) -> str:
    return "\n".join([
        "import json as _json",
        "class ToolError(Exception):\n    pass",
        f"_DB = _json.loads({json.dumps(json.dumps(db))})",
        f"_PROBES = _json.loads({json.dumps(json.dumps(probes))})",
        code,
        "_out = []",
        "for _args in _PROBES:",
        "    _db = _json.loads(_json.dumps(_DB))",
        "    try:",
        f"        _r = {name}(_db, **_args)",
        f"        _out.append({{'status': 'ok', 'result': _r, 'table': _db.get({table!r})}})",
        "    except ToolError as _e:",
        f"        _out.append({{'status': 'error', 'message': str(_e), 'table': _db.get({table!r})}})",
        "    except Exception as _e:",
        "        _out.append({'status': 'crash', 'message': type(_e).__name__ + ': ' + str(_e)[:200]})",
        f"print({MARKER!r} + _json.dumps(_out, default=str))",
    ])
