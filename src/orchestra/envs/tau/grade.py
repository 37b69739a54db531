"""τ² task records, golden-action replay and grading.

A task's reference is its golden `evaluation_criteria.actions`, replayed on a fresh copy of the task's initial
database. A trajectory is graded on what the task's `reward_basis` names (τ²'s default when absent: DB, COMMUNICATE):
- DB: the agent's final database has the golden database's canonical hash (`db_match`), and every record the golden
  actions wrote was written in the episode too (`touched`, the ToolScale criterion). The hash covers the domain's
  own tables, not the user's side (phone, inbox: `Domain.user_tables`), which the tasks check with env assertions;
  τ² also hashes the user's side, which would fail a task whose scenario has the user change it beyond the golden
  actions (mock `update_task_with_user_tools`);
- COMMUNICATE: every `communicate_info` string appears in what the agent said to the user (its assistant messages,
  final answer and `ask_user` messages), case-insensitively and number-format tolerant ("1,234.50" = "1234.5");
- NL_ASSERTION: natural-language assertions need an LLM judge, which this grader does not run. The data's
  `communicate_info` lists the facts those assertions check, so NL_ASSERTION counts `communicate` as its verifiable
  proxy; the assertions themselves are reported as not judged.
- ENV_ASSERTION: each `env_assertions` function, run on the agent's final database, returns its `assert_value`;
- ACTION: each golden action was performed (name, and the arguments named by `compare_args`, all when absent) by a
  successful agent call or by the simulated user.
`Outcome.solved` is true when every counted component is 1.0; `breakdown` reports all of them, counted or not.

Golden actions that fail are part of some references (the user gives a wrong email first, the agent tries an
exchange on a pending order): a failed golden action changes nothing, as in τ², and is listed by `check_domain`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestra.envs.tau.domains import Db, Domain, RecordKey, ToolError
from orchestra.toolcalls import strip_think
from orchestra.tools.spec import Tool
from orchestra.types import Outcome, Trajectory

DEFAULT_BASIS = frozenset({"DB", "COMMUNICATE"})
USER_TOOL_NAME = "ask_user"


@dataclass(frozen=True, slots=True)
class EnvCall:
    """A function call on the environment: an initialization action or an env assertion."""

    env_type: str
    func_name: str
    arguments: Mapping[str, Any]
    assert_value: bool = True


@dataclass(frozen=True, slots=True)
class GoldenAction:
    action_id: str
    name: str
    arguments: Mapping[str, Any]
    requestor: str = "assistant"
    compare_args: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class TauTaskSpec:
    """One τ² task, parsed. `instructions` is the user's scenario rendered as text."""

    id: str
    instructions: str
    persona: str | None
    ticket: str | None
    actions: tuple[GoldenAction, ...]
    communicate_info: tuple[str, ...]
    nl_assertions: tuple[str, ...]
    env_assertions: tuple[EnvCall, ...]
    reward_basis: frozenset[str]
    initialization_data: Mapping[str, Any] | None
    initialization_actions: tuple[EnvCall, ...]
    message_history: tuple[Mapping[str, Any], ...]


@dataclass(frozen=True, slots=True)
class ActionError:
    task_id: str
    action_id: str
    name: str
    write: bool
    message: str


@dataclass(frozen=True, slots=True)
class GoldenRun:
    """The golden replay of one task: final hash, records written, failed actions, and whether anything changed."""

    db_hash: str
    touched: frozenset[RecordKey]
    errors: tuple[ActionError, ...]
    changed: bool


def parse_task(raw: Mapping[str, Any]) -> TauTaskSpec:
    """A τ² task JSON object -> `TauTaskSpec` (tolerates the schema's optional and null fields)."""
    scenario = raw.get("user_scenario") or {}
    criteria = raw.get("evaluation_criteria") or {}
    state = raw.get("initial_state") or {}
    actions = tuple(
        GoldenAction(str(a.get("action_id", f"{raw['id']}_{i}")), a["name"], dict(a.get("arguments") or {}),
                     a.get("requestor") or "assistant",
                     None if a.get("compare_args") is None else tuple(a["compare_args"]))
        for i, a in enumerate(criteria.get("actions") or []))
    basis = criteria.get("reward_basis")
    return TauTaskSpec(
        id=str(raw["id"]),
        instructions=render_instructions(scenario.get("instructions")),
        persona=scenario.get("persona"),
        ticket=raw.get("ticket"),
        actions=actions,
        communicate_info=tuple(str(s) for s in criteria.get("communicate_info") or ()),
        nl_assertions=tuple(criteria.get("nl_assertions") or ()),
        env_assertions=tuple(_env_call(c) for c in criteria.get("env_assertions") or ()),
        reward_basis=frozenset(basis) if basis else DEFAULT_BASIS,
        initialization_data=state.get("initialization_data"),
        initialization_actions=tuple(_env_call(c) for c in state.get("initialization_actions") or ()),
        message_history=tuple(state.get("message_history") or ()),
    )


def render_instructions(instructions: Any) -> str:
    """τ² user instructions (a string, or the structured reason/known/unknown/task fields) as text."""
    if not isinstance(instructions, Mapping):
        return str(instructions or "").strip()
    parts = []
    for key, label in (("reason_for_call", "Reason for the call"), ("known_info", "What the customer knows"),
                       ("unknown_info", "What the customer does not know"),
                       ("task_instructions", "How the customer behaves")):
        value = instructions.get(key)
        if value and str(value).strip() not in ("", "."):
            parts.append(f"{label}: {str(value).strip()}")
    return "\n".join(parts)


def call_function(domain: Domain, templates: Mapping[str, Tool], db: Db, name: str, arguments: Mapping[str, Any],
                  side: str = "assistant") -> Any:
    """Run a domain function directly (tools get their arguments validated like an agent's call)."""
    fn = domain.function(name, side)
    if fn is None:
        raise ToolError(f"unknown function {name!r}")
    kwargs = dict(arguments)
    if name in templates:
        try:
            kwargs = templates[name].validate(kwargs)
        except ValueError as exc:
            raise ToolError(f"invalid arguments: {exc}") from None
        kwargs.pop("ctx", None)
    return fn(db, **kwargs)


def replay_golden(spec: TauTaskSpec, db: Db, domain: Domain, templates: Mapping[str, Tool]) -> GoldenRun:
    """Replay the golden actions on `db` (the task's fresh initial database); failures are recorded, not raised."""
    before = db.canonical_hash(exclude=domain.user_tables)
    errors = []
    for action in spec.actions:
        try:
            call_function(domain, templates, db, action.name, action.arguments, action.requestor)
        except Exception as exc:  # noqa: BLE001 - any failure of a golden action is data for the report
            errors.append(ActionError(spec.id, action.action_id, action.name, domain.is_write(action.name),
                                      f"{type(exc).__name__}: {exc}"))
    after = db.canonical_hash(exclude=domain.user_tables)
    return GoldenRun(after, frozenset(db.touched), tuple(errors), after != before)


def grade(spec: TauTaskSpec, golden: GoldenRun, db: Db, trajectory: Trajectory, *, domain: Domain,
          user_actions: Sequence[tuple[str, Mapping[str, Any]]] = ()) -> Outcome:
    """Grade `trajectory`, whose tools acted on `db`, against the task's golden run (see the module docstring)."""
    with db.lock:
        breakdown: dict[str, float] = {
            "db_match": float(db.canonical_hash(exclude=domain.user_tables) == golden.db_hash),
            "touched": _fraction([key in db.touched for key in golden.touched]),
            "communicate": _fraction([communicated(s, agent_texts(trajectory)) for s in spec.communicate_info]),
        }
        if spec.env_assertions:
            breakdown["env_assertions"] = _fraction([_holds(domain, db, c) for c in spec.env_assertions])
        performed = [*successful_calls(trajectory), *user_actions]
        breakdown["actions"] = _fraction([_performed(a, performed) for a in spec.actions])
    counted = _counted(spec.reward_basis)
    solved = all(breakdown.get(k, 1.0) == 1.0 for k in counted)
    failed = [k for k in counted if breakdown.get(k, 1.0) < 1.0]
    details = f"counted: {', '.join(counted) or 'nothing'}"
    if failed:
        details += f"; failed: {', '.join(failed)}"
    if spec.nl_assertions:
        details += f"; {len(spec.nl_assertions)} nl_assertions not judged"
    return Outcome(solved=solved, score=float(solved), breakdown=breakdown, details=details)


def successful_calls(trajectory: Trajectory) -> list[tuple[str, Mapping[str, Any]]]:
    """(name, arguments) of the agent's calls that ran without error, in order."""
    out = []
    for turn in trajectory.turns:
        status = {o.call_id: o.status for o in turn.observations}
        out += [(c.name, c.arguments) for c in turn.completion.tool_calls if status.get(c.id) == "ok"]
    return out


def agent_texts(trajectory: Trajectory) -> list[str]:
    """What the agent said to the user: assistant messages, the final answer, and `ask_user` messages."""
    texts = [strip_think(m.content) for m in trajectory.messages if m.role == "assistant" and m.content]
    texts += [str(c.arguments.get("message", "")) for c in trajectory.calls if c.name == USER_TOOL_NAME]
    if trajectory.final_answer:
        texts.append(trajectory.final_answer)
    return texts


_NUMBER = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?")


def normalize_text(text: str) -> str:
    """Lower case, single spaces, numbers without thousands separators or trailing decimal zeros."""
    def canonical(match: re.Match[str]) -> str:
        number = match.group(0).replace(",", "")
        return number.rstrip("0").rstrip(".") if "." in number else number

    return " ".join(_NUMBER.sub(canonical, text.lower()).split())


def communicated(info: str, texts: Iterable[str]) -> bool:
    """Whether `info` appears in `texts`; a number must match whole ("10" is not found in "100" or "10.5")."""
    needle = normalize_text(info)
    if not needle:
        return True
    pattern = re.escape(needle)
    if needle[0].isdigit():
        pattern = r"(?<![\d.])" + pattern
    if needle[-1].isdigit():
        pattern += r"(?!\.?\d)"
    return any(re.search(pattern, normalize_text(t)) for t in texts)


def _counted(basis: frozenset[str]) -> list[str]:
    counted = []
    if "DB" in basis:
        counted += ["db_match", "touched"]
    if basis & {"COMMUNICATE", "NL_ASSERTION"}:
        counted.append("communicate")
    if "ENV_ASSERTION" in basis:
        counted.append("env_assertions")
    if "ACTION" in basis:
        counted.append("actions")
    return counted


def _holds(domain: Domain, db: Db, check: EnvCall) -> bool:
    fn = domain.function(check.func_name, check.env_type)
    if fn is None:
        return False
    try:
        return bool(fn(db, **check.arguments)) == check.assert_value
    except Exception:  # noqa: BLE001 - an assertion that cannot run does not hold
        return False


def _performed(action: GoldenAction, performed: Sequence[tuple[str, Mapping[str, Any]]]) -> bool:
    keys = action.compare_args if action.compare_args is not None else tuple(action.arguments)
    return any(name == action.name and all(_same(args.get(k), action.arguments.get(k)) for k in keys)
               for name, args in performed)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def _fraction(flags: Sequence[bool]) -> float:
    return sum(flags) / len(flags) if flags else 1.0


def _env_call(raw: Mapping[str, Any]) -> EnvCall:
    value = raw.get("assert_value")
    return EnvCall(raw.get("env_type") or "assistant", raw["func_name"], dict(raw.get("arguments") or {}),
                   True if value is None else bool(value))

