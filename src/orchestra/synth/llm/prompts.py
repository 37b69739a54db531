"""The stage prompts of the LLM pipeline: one function per stage, each returning the messages to send.

Every request starts with a `[stage: NAME]` line (a scripted model routes on it; real models ignore it), states the
inputs as JSON, and ends with the exact JSON shape to answer with, so one parser per stage suffices. It comes after one
worked example of the stage (a bakery: the example's request, rendered by the same template, and its answer), which
small models copy far more reliably than a description. The rendered text is part of each item's cache key: editing
a prompt invalidates exactly the items that used it.
"""

from __future__ import annotations

import json
from typing import Any

from orchestra.types import Message

SYSTEM = ("You write data for a customer-service simulation. Answer with one JSON object only, exactly in the shape "
          "asked for: no code fence (```), no prose.")


def _body(stage: str, body: str) -> str:
    return f"[stage: {stage}]\n{body.strip()}\n"


def _messages(stage: str, body: str) -> list[Message]:
    """System, one worked example of the stage (its request and answer), then the request: small models copy the
    example's shape far more often than they follow a description of it."""
    example = _EXAMPLES.get(stage)
    shots = [Message("user", example[0]), Message("assistant", example[1])] if example else []
    return [Message("system", SYSTEM), *shots, Message("user", body)]


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _tables_text(domain: str, count: int, attempt: int) -> str:
    return _body("tables", f"""
Design the database of a {domain} customer-service desk: {count} tables (attempt {attempt}).
Each table holds one kind of record (customers, orders, ...). Names are lowercase snake_case; entity is the singular.
Answer: {{"tables": [{{"name": "customers", "entity": "customer", "description": "people who buy"}}]}}""")


def _schema_text(domain: str, table: dict[str, Any], all_tables: list[str], attempt: int) -> str:
    return _body("schema", f"""
Domain: {domain}. Tables: {_json(all_tables)}. Define the fields of table {_json(table)} (attempt {attempt}).
Types: string, integer, number, boolean. One string field is the key (e.g. "order_id"). A field that holds the key
of another table names it in "references". A field with a few fixed values (a status) lists them in "enum".
Use 4 to 8 fields.
Answer: {{"key": "order_id", "fields": [{{"name": "order_id", "type": "string", "description": "..."}},
{{"name": "customer_id", "type": "string", "references": "customers", "description": "..."}},
{{"name": "status", "type": "string", "enum": ["pending", "shipped", "cancelled"], "description": "..."}}]}}""")


def _records_text(domain: str, table: dict[str, Any], count: int, references: dict[str, list[str]],
            taken: list[str], batch: int) -> str:
    return _body("records", f"""
Domain: {domain}. Write {count} realistic records of table {table['name']} (batch {batch}), with this schema:
{_json(table)}
Every field is present with its type; enum fields use one of their values; a reference field holds one of these
existing keys: {_json(references)}. Keys already used (do not reuse): {_json(taken)}.
Answer: {{"records": [{{"{table['key']}": "...", ...}}]}}""")


def _realism_text(domain: str, table: str, rows: list[dict[str, Any]]) -> str:
    return _body("realism", f"""
Domain: {domain}. Review these records of table {table} for realism: names, amounts, dates and combinations a real
{domain} business would have. List only the records that are not realistic, with why.
Records: {_json(rows)}
Answer: {{"unrealistic": [{{"key": "<key of the record>", "reason": "..."}}]}}  (an empty list when all are fine)""")


def _tool_code_text(domain: str, spec: dict[str, Any], table: dict[str, Any], example: dict[str, Any]) -> str:
    return _body("tool", f"""
Domain: {domain}. Write the Python function `{spec['signature']}`.
What it must do: {spec['contract']}
`db` maps each table name to a dict of records by key (db["{table['name']}"][key] is a record dict).
Table {table['name']} (key {table['key']}): {_json(table['fields'])}. Example record: {_json(example)}.
Raise ToolError("...") (already defined: do not define or import it) when the request cannot be done.
No imports except json, math, re, datetime, copy; no file, network, eval or exec.
Answer with the code in one ```python block.""")


def _intent_text(domain: str, tools: list[dict[str, Any]], rows: dict[str, Any], kind: str, index: int) -> str:
    goal = "change something (a write tool is needed)" if kind == "write" else "find out something (reads only)"
    return _body("intent", f"""
Domain: {domain}. Tools of the agent: {_json(tools)}
Some records: {_json(rows)}
Write what one customer (number {index}) calls about: they want to {goal}, about the records above.
Answer: {{"intent": "<one sentence, e.g. I want to cancel my order O-1>"}}""")


def _task_text(domain: str, tools: list[dict[str, Any]], rows: dict[str, Any], intent_text: str) -> str:
    return _body("task", f"""
Domain: {domain}. Tools of the agent: {_json(tools)}
Records: {_json(rows)}
Customer intent: {intent_text}
Write the task: the customer's instructions (second person), the golden actions (the tool calls an agent must make,
in order, with exact arguments from the records) and the values the agent must tell the customer (from what the
calls return; none for a pure change).
Answer: {{"reason_for_call": "You want ...", "known_info": "You know ...", "unknown_info": "You do not know ...",
"task_instructions": "You confirm the change.", "actions": [{{"name": "<tool>", "arguments": {{}}}}],
"communicate_info": ["<value>"]}}""")


def _evolve_text(domain: str, tools: list[dict[str, Any]], rows: dict[str, Any], original: dict[str, Any]) -> str:
    return _body("evolve", f"""
Domain: {domain}. Tools of the agent: {_json(tools)}
Records: {_json(rows)}
Make this task harder: keep its goal, add one or two more steps (another record to look up or change, a condition
to check first). The golden actions must still be exact tool calls on these records.
Task: {_json(original)}
Answer in the same JSON shape as the task.""")


# ---- what the pipeline calls: the request, after the stage's worked example ----------------------------------------

def tables(domain: str, count: int, attempt: int) -> list[Message]:
    return _messages("tables", _tables_text(domain, count, attempt))


def schema(domain: str, table: dict[str, Any], all_tables: list[str], attempt: int) -> list[Message]:
    return _messages("schema", _schema_text(domain, table, all_tables, attempt))


def records(domain: str, table: dict[str, Any], count: int, references: dict[str, list[str]], taken: list[str],
            batch: int) -> list[Message]:
    return _messages("records", _records_text(domain, table, count, references, taken, batch))


def realism(domain: str, table: str, rows: list[dict[str, Any]]) -> list[Message]:
    return _messages("realism", _realism_text(domain, table, rows))


def tool_code(domain: str, spec: dict[str, Any], table: dict[str, Any], example: dict[str, Any]) -> list[Message]:
    return _messages("tool", _tool_code_text(domain, spec, table, example))


def intent(domain: str, tools: list[dict[str, Any]], rows: dict[str, Any], kind: str, index: int) -> list[Message]:
    return _messages("intent", _intent_text(domain, tools, rows, kind, index))


def task(domain: str, tools: list[dict[str, Any]], rows: dict[str, Any], intent_text: str) -> list[Message]:
    return _messages("task", _task_text(domain, tools, rows, intent_text))


def evolve(domain: str, tools: list[dict[str, Any]], rows: dict[str, Any], original: dict[str, Any]) -> list[Message]:
    return _messages("evolve", _evolve_text(domain, tools, rows, original))


# ---- the worked examples (a bakery), rendered by the same templates ------------------------------------------------

_CUSTOMERS = {"name": "customers", "entity": "customer", "key": "customer_id", "fields": [
    {"name": "customer_id", "type": "string"}, {"name": "name", "type": "string"}, {"name": "email", "type": "string"}]}
_ORDER = {"order_id": "O-7", "customer_id": "C-1", "status": "placed", "loaves": 2}
_TOOLS = [{"name": "get_order", "table": "orders", "description": "Get an order by order_id.",
           "parameters": {"order_id": "string"}},
          {"name": "update_order_status", "table": "orders", "description": "Set the status of an order.",
           "parameters": {"order_id": "string", "status": ["placed", "baked", "cancelled"]}}]
_ROWS = {"orders": {"O-7": _ORDER}}
_TOOL_ANSWER = '''```python
def get_customer(db: dict, customer_id: str) -> dict:
    rows = db["customers"]
    if customer_id not in rows:
        raise ToolError(f"customer {customer_id} not found")
    return dict(rows[customer_id])
```'''
_EXAMPLES: dict[str, tuple[str, str]] = {
    "tables": (_tables_text("bakery", 2, 0), _json({"tables": [
        {"name": "customers", "entity": "customer", "description": "people who buy bread"},
        {"name": "orders", "entity": "order", "description": "loaves ordered for pick-up"}]})),
    "schema": (_schema_text("bakery", {"name": "orders", "entity": "order"}, ["customers", "orders"], 0), _json({
        "key": "order_id", "fields": [
            {"name": "order_id", "type": "string", "description": "order number"},
            {"name": "customer_id", "type": "string", "references": "customers", "description": "who ordered"},
            {"name": "status", "type": "string", "enum": ["placed", "baked", "cancelled"], "description": "state"},
            {"name": "loaves", "type": "integer", "description": "how many loaves"}]})),
    "records": (_records_text("bakery", _CUSTOMERS, 2, {}, [], 0), _json({"records": [
        {"customer_id": "C-1", "name": "Mia Wong", "email": "mia.wong@example.com"},
        {"customer_id": "C-2", "name": "Tom Berg", "email": "tom.berg@example.com"}]})),
    "realism": (_realism_text("bakery", "orders", [_ORDER, {**_ORDER, "order_id": "O-8", "loaves": 9000}]),
                _json({"unrealistic": [{"key": "O-8", "reason": "9000 loaves is not one customer's order"}]})),
    "tool": (_tool_code_text("bakery", {"signature": "def get_customer(db: dict, customer_id: str) -> dict",
                                        "contract": "Return the record db['customers'][customer_id]; raise "
                                                    "ToolError if there is none."},
                             _CUSTOMERS, {"customer_id": "C-1", "name": "Mia Wong", "email": "mia.wong@example.com"}),
             _TOOL_ANSWER),
    "intent": (_intent_text("bakery", _TOOLS, _ROWS, "write", 0),
               _json({"intent": "I want to cancel my order O-7."})),
    "task": (_task_text("bakery", _TOOLS, _ROWS, "I want to cancel my order O-7."), _json({
        "reason_for_call": "You want to cancel your order O-7.", "known_info": "Your order id is O-7.",
        "unknown_info": "", "task_instructions": "You confirm the change.",
        "actions": [{"name": "get_order", "arguments": {"order_id": "O-7"}},
                    {"name": "update_order_status", "arguments": {"order_id": "O-7", "status": "cancelled"}}],
        "communicate_info": []})),
}
