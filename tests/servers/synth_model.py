"""A scripted synthesis model: answers every stage prompt of `orchestra synth llm` (routed on its `[stage: X]` line)
with valid output for a small shop domain, except where a test plants a bad answer.

`SynthScript(bad)` is a `ScriptedOpenAIServer` handler. `bad` maps (stage, item key, n) to a bad answer: the n-th
time (1-based) the item is asked, that text is returned instead of the good one. Item keys: the table name (schema,
records, realism: "customers/0" with the batch), the tool name (tool), the customer number (intent: "1"), the intent
text's record key (task), and the original's first action argument (evolve). Unplanned items get good answers.
`asked` counts requests per (stage, key) and `log` lists them in order, so tests can assert what was (not)
requested again.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Mapping
from typing import Any

from tests.servers.scripted_openai import Reply, SeenRequest

SCHEMAS: dict[str, dict[str, Any]] = {
    "customers": {"key": "customer_id", "fields": [
        {"name": "customer_id", "type": "string"}, {"name": "name", "type": "string"},
        {"name": "email", "type": "string"}, {"name": "tier", "type": "string", "enum": ["basic", "gold", "platinum"]}]},
    "products": {"key": "product_id", "fields": [
        {"name": "product_id", "type": "string"}, {"name": "title", "type": "string"},
        {"name": "price", "type": "number"}, {"name": "category", "type": "string", "enum": ["books", "games"]}]},
    "orders": {"key": "order_id", "fields": [
        {"name": "order_id", "type": "string"}, {"name": "customer_id", "type": "string", "references": "customers"},
        {"name": "product_id", "type": "string", "references": "products"},
        {"name": "status", "type": "string", "enum": ["pending", "shipped", "cancelled"]},
        {"name": "quantity", "type": "integer"}]},
}
TABLES = [{"name": "customers", "entity": "customer", "description": "people who buy"},
          {"name": "products", "entity": "product", "description": "what is sold"},
          {"name": "orders", "entity": "order", "description": "purchases"}]
FIRST = ["Ada", "Bruno", "Chloe", "Dmitri", "Elena", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Kemal", "Lena"]
TITLES = ["Dune", "Chess Set", "Go Board", "Emma", "Catan", "Ulysses", "Hamlet", "Risk", "Ivanhoe", "Clue"]


def stage_of(request: SeenRequest) -> tuple[str, str]:
    text = request.messages[-1]["content"]
    match = re.match(r"\[stage: (\w+)\]\n", text)
    return (match.group(1) if match else "", text)


def json_after(text: str, marker: str) -> Any:
    start = text.index(marker) + len(marker)
    return json.JSONDecoder().raw_decode(text, start)[0]


class SynthScript:
    """The handler (see the module docstring)."""

    def __init__(self, bad: Mapping[tuple[str, str, int], str] | None = None):
        self.bad = dict(bad or {})
        self.asked: Counter[tuple[str, str]] = Counter()
        self.log: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def __call__(self, request: SeenRequest) -> Reply:
        stage, text = stage_of(request)
        key, good = getattr(self, f"_{stage}")(text)
        with self._lock:
            self.asked[(stage, key)] += 1
            self.asked[(stage, "*")] += 1
            self.log.append((stage, key))
            n, overall = self.asked[(stage, key)], self.asked[(stage, "*")]
        answer = self.bad.get((stage, key, n), self.bad.get((stage, "*", overall), good))
        return Reply(content=answer, usage=(len(text) // 4, 50))

    def _tables(self, text: str) -> tuple[str, str]:
        count = int(re.search(r": (\d+) tables", text).group(1))
        return "tables", json.dumps({"tables": TABLES[:count]})

    def _schema(self, text: str) -> tuple[str, str]:
        table = json_after(text, "Define the fields of table ")["name"]
        return table, json.dumps(SCHEMAS[table])

    def _records(self, text: str) -> tuple[str, str]:
        m = re.search(r"Write (\d+) realistic records of table (\w+) \(batch (\d+)\)", text)
        count, table, batch = int(m.group(1)), m.group(2), int(m.group(3))
        refs = json_after(text, "existing keys: ")
        rows = [_row(table, batch * 5 + j, refs) for j in range(count)]
        return f"{table}/{batch}", "Here are the records: " + json.dumps({"records": rows})

    def _realism(self, text: str) -> tuple[str, str]:
        table = re.search(r"records of table (\w+) for realism", text).group(1)
        rows = json_after(text, "Records: ")
        own = next(v for v in rows[0].values() if str(v).startswith(table[0].upper() + "-"))
        return f"{table}/{own}", json.dumps({"unrealistic": []})

    def _tool(self, text: str) -> tuple[str, str]:
        signature = re.search(r"Write the Python function `(def (\w+)\(db: dict, ([^)]*)\) -> dict)`", text)
        name, params = signature.group(2), [p.split(":")[0].strip() for p in signature.group(3).split(",")]
        table = re.search(r"Table (\w+) \(key (\w+)\)", text)
        return name, "```python\n" + tool_code(name, params, table.group(1), table.group(2), text) + "```\n"

    def _intent(self, text: str) -> tuple[str, str]:
        index = re.search(r"customer \(number (\d+)\)", text).group(1)
        tools = json_after(text, "Tools of the agent: ")
        rows = json_after(text, "Some records: ")
        write = "change something" in text
        return index, json.dumps({"intent": intent_for(tools, rows, write)})

    def _task(self, text: str) -> tuple[str, str]:
        intent = re.search(r"Customer intent: (.*)\n", text).group(1)
        rows = json_after(text, "Records: ")
        return re.search(r"(\w+-\d+)", intent).group(1), json.dumps(task_for(intent, rows))

    def _evolve(self, text: str) -> tuple[str, str]:
        original = json_after(text, "Task: ")
        rows = json_after(text, "Records: ")
        tools = json_after(text, "Tools of the agent: ")
        first = str(next(iter(original["actions"][0]["arguments"].values())))
        return first, json.dumps(harder(original, rows, tools))


def _row(table: str, i: int, refs: dict[str, list[str]]) -> dict[str, Any]:
    if table == "customers":
        return {"customer_id": f"C-{i}", "name": f"{FIRST[i % len(FIRST)]} Roe", "tier": ["basic", "gold"][i % 2],
                "email": f"{FIRST[i % len(FIRST)].lower()}{i}@example.com"}
    if table == "products":
        return {"product_id": f"P-{i}", "title": TITLES[i % len(TITLES)], "price": 5.5 + i,
                "category": ["books", "games"][i % 2]}
    customers, products = refs["customer_id"] or ["C-none"], refs["product_id"] or ["P-none"]
    return {"order_id": f"O-{i}", "customer_id": customers[i % len(customers)],
            "product_id": products[i % len(products)], "status": ["pending", "shipped"][i % 2], "quantity": 1 + i % 3}


def tool_code(name: str, params: list[str], table: str, key: str, text: str) -> str:
    """Correct code for the planned tool (what a good model writes)."""
    head = f"def {name}(db: dict, {', '.join(p + ': str' for p in params)}) -> dict:\n    rows = db[{table!r}]\n"
    missing = f"    if {params[0]} not in rows:\n        raise ToolError('no such record: ' + str({params[0]}))\n"
    if name.startswith("get_"):
        return head + missing + f"    return dict(rows[{params[0]}])\n"
    if name.startswith("search_"):
        entity = re.search(r"as \{'(\w+)_ids'", text).group(1)
        return head + ("    want = str(value).strip().lower()\n"
                       "    keys = sorted(k for k, r in rows.items() if str(r.get(field, '')).strip().lower() == want)\n"
                       f"    return {{'{entity}_ids': keys[:10], 'more': max(0, len(keys) - 10)}}\n")
    if name.startswith("update_"):
        field = re.search(r"Set field '(\w+)'", text).group(1)
        check = (f"    if '@' not in {params[1]} or ' ' in {params[1]}:\n        raise ToolError('not an e-mail')\n"
                 if field == "email" else "")
        return head + missing + (
            f"    if str(rows[{params[0]}].get({field!r})).strip().lower() == str({params[1]}).strip().lower():\n"
            "        raise ToolError('nothing to change')\n" + check +
            f"    rows[{params[0]}][{field!r}] = {params[1]}\n    return dict(rows[{params[0]}])\n")
    if name.startswith("create_"):
        prefix = re.search(r"The new key is '([^']+)'", text).group(1)
        refs = re.findall(r"(\w+) in db\['(\w+)'\]", re.search(r"unless (.*?)[.,] ", text).group(1))
        lines = [f"    if {p} not in db[{t!r}]:\n        raise ToolError('no such ' + {t!r})\n" for p, t in refs]
        lines.append(f"    n = len(rows) + 1\n    while {prefix!r} + str(n) in rows:\n        n += 1\n"
                     f"    key = {prefix!r} + str(n)\n    record = {{{key!r}: key}}\n")
        lines += [f"    if {p} is not None:\n        record[{p!r}] = {p}\n" for p in params]
        return head + "".join(lines) + "    rows[key] = record\n    return record\n"
    users = re.findall(r"db\['(\w+)'\] records' '(\w+)'", text)
    checks = "".join(f"    if any(r.get({f!r}) == {params[0]} for r in db[{t!r}].values()):\n"
                     f"        raise ToolError('still referenced')\n" for t, f in users)
    return head + missing + checks + f"    del rows[{params[0]}]\n    return {{'deleted': {params[0]}}}\n"


def intent_for(tools: list[dict[str, Any]], rows: dict[str, dict[str, Any]], write: bool) -> str:
    table = next(iter(rows))
    key, record = next(iter(rows[table].items()))
    if write:
        for tool in tools:
            enum = [v for v in tool["parameters"].values() if isinstance(v, list)]
            if tool["table"] == table and tool["name"].startswith("update_") and enum:
                field = tool["name"].split("_", 2)[2]
                value = next(v for v in enum[0] if v != record.get(field))
                return f"I want to change the {field} of {key} to {value}."
    field = next(f for f in record if f != next(iter(record)) and "_id" not in f)
    return f"I want to know the {field} of {key}."


def task_for(intent: str, rows: dict[str, dict[str, Any]]) -> dict[str, Any]:
    change = re.match(r"I want to change the (\w+) of (\S+) to (\w+)\.", intent)
    ask = re.match(r"I want to know the (\w+) of (\S+)\.", intent)
    key = (change or ask).group(2)
    table = next(t for t, rs in rows.items() if key in rs)
    entity = table.rstrip("s")
    get = {"name": f"get_{entity}", "arguments": {f"{entity}_id": key}}
    if change:
        field, value = change.group(1), change.group(3)
        return {"reason_for_call": f"You want the {field} of {entity} {key} changed to {value}.",
                "known_info": f"The {entity} id is {key}.", "unknown_info": "", "task_instructions":
                "You confirm the change.", "communicate_info": [],
                "actions": [get, {"name": f"update_{entity}_{field}", "arguments": {f"{entity}_id": key,
                                                                                    field: value}}]}
    field = ask.group(1)
    return {"reason_for_call": f"You want to know the {field} of {entity} {key}.",
            "known_info": f"The {entity} id is {key}.", "unknown_info": f"You do not know the {field}.",
            "task_instructions": "", "actions": [get], "communicate_info": [str(rows[table][key][field])]}


def harder(original: dict[str, Any], rows: dict[str, dict[str, Any]], tools: list[dict[str, Any]]) -> dict[str, Any]:
    """The original plus a lookup of another record it references, whose name or title is to be told."""
    names = {t["name"] for t in tools}
    for table, records in rows.items():
        entity = table.rstrip("s")
        for key, record in records.items():
            told = record.get("name") or record.get("title")
            if f"get_{entity}" in names and told and key not in json.dumps(original["actions"]):
                return {**original, "reason_for_call": original["reason_for_call"] + f" Also tell me the name on "
                        f"{entity} {key}.", "known_info": original["known_info"] + f" The {entity} id is {key}.",
                        "actions": [{"name": f"get_{entity}", "arguments": {f"{entity}_id": key}},
                                    *original["actions"]],
                        "communicate_info": [*original["communicate_info"], str(told)]}
    return original
