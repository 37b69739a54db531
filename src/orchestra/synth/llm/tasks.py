"""Intents, tasks and their evolution: parsing what the model wrote and the verification filters every task passes.

A task draft is the model's JSON: the customer's instructions (τ² structured fields), golden actions (tool name and
arguments) and the values to communicate. `check_task` accepts it only when:
- it parses (`TaskDraft`), names only the domain's accepted tools, has 1..`MAX_ACTIONS` actions;
- it passes the procedural generator's verification (`orchestra.synth.procedural.verify`, run on the generated
  database and the declared tools, exactly as the `tau` environment binds them): every golden action executes without
  error; a write task changes the database and a read task does not; every value to communicate appears in what the
  golden calls returned and is distinctive;
- it is not solvable with zero actions: the database changes or there is something to tell, and no value to tell is
  already written in the customer's own instructions (an agent echoing the request would pass);
- it does not repeat another task's actions (the pipeline checks that across items).
An evolved task must pass the same checks and have more golden actions than its original.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pydantic

from orchestra.envs.tau.domains import base_digests, tool_template
from orchestra.envs.tau.domains.derived import ToolsFile, build_domain
from orchestra.envs.tau.grade import normalize_text
from orchestra.synth.drafting import Context, Draft
from orchestra.synth.llm.items import Rejected, extract_json
from orchestra.synth.procedural import verify
from orchestra.synth.schema_infer import DomainSchema
from orchestra.synth.templates import Scenario

MAX_ACTIONS = 8
GENERATOR = "orchestra.llm/1"


class Action(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(frozen=True, extra="ignore")
    name: str
    arguments: dict[str, Any] = {}


class TaskDraft(pydantic.BaseModel):
    """The task stage's answer (and the evolution stage's)."""

    model_config = pydantic.ConfigDict(frozen=True, extra="ignore")
    reason_for_call: str = pydantic.Field(min_length=8)
    known_info: str = ""
    unknown_info: str = ""
    task_instructions: str = ""
    actions: tuple[Action, ...]
    communicate_info: tuple[str, ...] = ()

    @pydantic.field_validator("communicate_info", mode="before")
    @classmethod
    def _texts(cls, value: Any) -> Any:
        return tuple(str(v) for v in value) if isinstance(value, list | tuple) else value

    def instructions(self) -> dict[str, str]:
        return {"reason_for_call": self.reason_for_call, "known_info": self.known_info,
                "unknown_info": self.unknown_info, "task_instructions": self.task_instructions}


def parse_intent(text: str) -> str:
    raw = extract_json(text)
    intent = raw.get("intent") if isinstance(raw, dict) else None
    if not isinstance(intent, str) or not 8 <= len(intent.strip()) <= 400:
        raise Rejected("intent: missing or not a sentence")
    return intent.strip()


def verifier(tools: ToolsFile, db: Mapping[str, Mapping[str, dict[str, Any]]]) -> Context:
    """What `procedural.verify` replays drafts on: the declared tools over the generated database."""
    domain = build_domain(tools)
    base = {name: dict(rows) for name, rows in db.items()}
    templates = {f.__name__: tool_template(f, write=w) for fs, w in ((domain.read_tools, False),
                                                                     (domain.write_tools, True)) for f in fs}
    return Context(DomainSchema(tools.domain, ()), tools, (), domain, templates, base, base_digests(base),
                   {t.name: t for t in tools.tools})


def check_task(text: str, ctx: Context, *, longer_than: int = 0) -> dict[str, Any]:
    """The accepted draft as JSON (`TaskDraft` fields plus `kind`), else `Rejected` (see the module docstring)."""
    raw = extract_json(text)
    try:
        draft = TaskDraft.model_validate(raw)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0]
        raise Rejected(f"task_format: {'.'.join(str(p) for p in first['loc'])}", first["msg"]) from None
    if not 1 <= len(draft.actions) <= MAX_ACTIONS:
        raise Rejected("task_format: 1 to 8 actions")
    unknown = [a.name for a in draft.actions if a.name not in ctx.tool_defs]
    if unknown:
        raise Rejected("unknown_tool", ", ".join(unknown))
    if len(draft.actions) <= longer_than:
        raise Rejected("not_harder", f"{len(draft.actions)} actions, the original has {longer_than}")
    writes = sum(ctx.tool_defs[a.name].kind in ("create", "update", "delete") for a in draft.actions)
    kind = "write" if writes else "read"
    if not writes and not draft.communicate_info:
        raise Rejected("solvable_with_zero_actions", "no change and nothing to tell")
    said = normalize_text(" ".join(draft.instructions().values()))
    echoed = [v for v in draft.communicate_info if normalize_text(v) and normalize_text(v) in said]
    if echoed:
        raise Rejected("solvable_with_zero_actions", f"the instructions already say {echoed[0]!r}")
    scenario = Scenario(draft.reason_for_call, draft.known_info, draft.unknown_info, draft.task_instructions)
    actions = tuple((a.name, dict(a.arguments)) for a in draft.actions)
    reason = verify(ctx, Draft(kind, actions, draft.communicate_info, scenario, "llm"))
    if reason is not None:
        raise Rejected(reason)
    return {**draft.model_dump(mode="json"), "kind": kind, "writes": writes}


def signature(task: Mapping[str, Any]) -> str:
    """What makes two tasks the same: their golden actions."""
    return json.dumps([[a["name"], a["arguments"]] for a in task["actions"]], sort_keys=True)


def task_json(task: Mapping[str, Any], task_id: str, shown: Sequence[str], seed: int, **meta: Any) -> dict[str, Any]:
    """An accepted draft as a τ² task record (the procedural generator's layout, generator `orchestra.llm/1`)."""
    actions = task["actions"]
    return {
        "id": task_id,
        "description": {"purpose": meta.get("intent", "")},
        "user_scenario": {"instructions": {k: task[k] for k in ("reason_for_call", "known_info", "unknown_info",
                                                                   "task_instructions")}},
        "evaluation_criteria": {
            "actions": [{"action_id": f"{task_id}_{j}", "name": a["name"], "arguments": a["arguments"],
                         "requestor": "assistant"} for j, a in enumerate(actions)],
            "communicate_info": list(task["communicate_info"]),
            "reward_basis": ["DB", "COMMUNICATE"],
        },
        "orchestra": {"tools": list(shown), "difficulty": len(actions), "kind": task["kind"], "writes": task["writes"],
                      "refusal_reason": None, "refused": None, "generator": GENERATOR, "seed": seed, **meta},
    }
