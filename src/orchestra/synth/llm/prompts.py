"""The stage prompts of the LLM pipeline: one function per stage, each returning the messages to send.

Every prompt starts with a `[stage: NAME]` line (a scripted model routes on it; real models ignore it), states the
inputs as JSON, and ends with the exact JSON shape to answer with, so one parser per stage suffices. The rendered
text is part of each item's cache key: editing a prompt invalidates exactly the items that used it.
"""

from __future__ import annotations

import json
from typing import Any

from orchestra.types import Message

SYSTEM = ("You write data for a customer-service simulation. Answer with one JSON object only, exactly in the shape "
          "asked for: no code fence (```), no prose.")


def _messages(stage: str, body: str) -> list[Message]:
    return [Message("system", SYSTEM), Message("user", f"[stage: {stage}]\n{body.strip()}\n")]


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def tables(domain: str, count: int, attempt: int) -> list[Message]:
    return _messages("tables", f"""
Design the database of a {domain} customer-service desk: {count} tables (attempt {attempt}).
Each table holds one kind of record (customers, orders, ...). Names are lowercase snake_case; entity is the singular.
Answer: {{"tables": [{{"name": "customers", "entity": "customer", "description": "people who buy"}}]}}""")


def schema(domain: str, table: dict[str, Any], all_tables: list[str], attempt: int) -> list[Message]:
    return _messages("schema", f"""
Domain: {domain}. Tables: {_json(all_tables)}. Define the fields of table {_json(table)} (attempt {attempt}).
Types: string, integer, number, boolean. One string field is the key (e.g. "order_id"). A field that holds the key
of another table names it in "references". A field with a few fixed values (a status) lists them in "enum".
Use 4 to 8 fields.
Answer: {{"key": "order_id", "fields": [{{"name": "order_id", "type": "string", "description": "..."}},
{{"name": "customer_id", "type": "string", "references": "customers", "description": "..."}},
{{"name": "status", "type": "string", "enum": ["pending", "shipped", "cancelled"], "description": "..."}}]}}""")


def records(domain: str, table: dict[str, Any], count: int, references: dict[str, list[str]],
            taken: list[str], batch: int) -> list[Message]:
    return _messages("records", f"""
Domain: {domain}. Write {count} realistic records of table {table['name']} (batch {batch}), with this schema:
{_json(table)}
Every field is present with its type; enum fields use one of their values; a reference field holds one of these
existing keys: {_json(references)}. Keys already used (do not reuse): {_json(taken)}.
Answer: {{"records": [{{"{table['key']}": "...", ...}}]}}""")


def realism(domain: str, table: str, rows: list[dict[str, Any]]) -> list[Message]:
    return _messages("realism", f"""
Domain: {domain}. Review these records of table {table} for realism: names, amounts, dates and combinations a real
{domain} business would have. List only the records that are not realistic, with why.
Records: {_json(rows)}
Answer: {{"unrealistic": [{{"key": "<key of the record>", "reason": "..."}}]}}  (an empty list when all are fine)""")


def tool_code(domain: str, spec: dict[str, Any], table: dict[str, Any], example: dict[str, Any]) -> list[Message]:
    return _messages("tool", f"""
Domain: {domain}. Write the Python function `{spec['signature']}`.
What it must do: {spec['contract']}
`db` maps each table name to a dict of records by key (db["{table['name']}"][key] is a record dict).
Table {table['name']} (key {table['key']}): {_json(table['fields'])}. Example record: {_json(example)}.
Raise ToolError("...") (already defined: do not define or import it) when the request cannot be done.
No imports except json, math, re, datetime, copy; no file, network, eval or exec.
Answer with the code in one ```python block.""")


def intent(domain: str, tools: list[dict[str, Any]], rows: dict[str, Any], kind: str, index: int) -> list[Message]:
    goal = "change something (a write tool is needed)" if kind == "write" else "find out something (reads only)"
    return _messages("intent", f"""
Domain: {domain}. Tools of the agent: {_json(tools)}
Some records: {_json(rows)}
Write what one customer (number {index}) calls about: they want to {goal}, about the records above.
Answer: {{"intent": "<one sentence, e.g. I want to cancel my order O-1>"}}""")


def task(domain: str, tools: list[dict[str, Any]], rows: dict[str, Any], intent_text: str) -> list[Message]:
    return _messages("task", f"""
Domain: {domain}. Tools of the agent: {_json(tools)}
Records: {_json(rows)}
Customer intent: {intent_text}
Write the task: the customer's instructions (second person), the golden actions (the tool calls an agent must make,
in order, with exact arguments from the records) and the values the agent must tell the customer (from what the
calls return; none for a pure change).
Answer: {{"reason_for_call": "You want ...", "known_info": "You know ...", "unknown_info": "You do not know ...",
"task_instructions": "You confirm the change.", "actions": [{{"name": "<tool>", "arguments": {{}}}}],
"communicate_info": ["<value>"]}}""")


def evolve(domain: str, tools: list[dict[str, Any]], rows: dict[str, Any], original: dict[str, Any]) -> list[Message]:
    return _messages("evolve", f"""
Domain: {domain}. Tools of the agent: {_json(tools)}
Records: {_json(rows)}
Make this task harder: keep its goal, add one or two more steps (another record to look up or change, a condition
to check first). The golden actions must still be exact tool calls on these records.
Task: {_json(original)}
Answer in the same JSON shape as the task.""")
