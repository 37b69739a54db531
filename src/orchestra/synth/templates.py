"""User scenarios for procedural tasks: the customer's request in τ²'s structured instruction fields.

Every scenario is second person ("You want ..."), names the records the customer knows (by id, or by the e-mail or
name a search finds), says what they do not know, and how to behave (confirm a change; accept a refusal). The text
only states facts the golden actions use, so a task's request and its reference cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

VERBS = {"cancelled": "cancel", "canceled": "cancel", "frozen": "freeze", "blocked": "block", "suspended": "suspend",
         "active": "reactivate", "revoked": "revoke", "verified": "verify", "on-hold": "put on hold",
         "on_hold": "put on hold", "postponed": "postpone", "confirmed": "confirm", "refunded": "refund"}
CONFIRM = "You confirm the change."
ACCEPT = "If it cannot be done, you accept the reason."


@dataclass(frozen=True, slots=True)
class Ref:
    """How the customer names one record: by its id, or by a field a search finds it by (e-mail, name)."""

    entity: str
    key: str
    name: str
    """How the request names it: "booking S78YJLG-B1", "the client with contact email a@b.hu"."""
    known: str
    """What the customer knows: "the booking id is S78YJLG-B1"."""

    @classmethod
    def by_key(cls, entity: str, key_field: str, key: str) -> Ref:
        label = key_field.replace("_", " ")
        return cls(entity, key, f"{entity} {key}", f"the {label} is {key}")

    @classmethod
    def by_field(cls, entity: str, key: str, label: str, value: str) -> Ref:
        return cls(entity, key, f"the {entity} with {label} {value}", f"the {entity}'s {label} is {value}")


@dataclass(frozen=True, slots=True)
class Scenario:
    reason: str
    known: str
    unknown: str
    behaviour: str

    def to_json(self) -> dict[str, str]:
        return {"reason_for_call": self.reason, "known_info": self.known, "unknown_info": self.unknown,
                "task_instructions": self.behaviour}


def known_text(refs: Sequence[Ref]) -> str:
    return " ".join(f"{r.known[0].upper()}{r.known[1:]}." for r in refs)


def ask(refs: Sequence[Ref], labels: Sequence[str], *, of: str = "") -> Scenario:
    """A question about fields of one or more records (`of`: the related record they belong to, e.g. 'its theater')."""
    things = " and the ".join(labels)
    whose = " and of ".join(_name(r) for r in refs)
    target = f"{of} of {whose}" if of else whose
    return Scenario(reason=f"You want to know the {things} of {target}.", known=known_text(refs),
                    unknown=f"You do not know the {things}.",
                    behaviour="")


def change(refs: Sequence[Ref], changes: Sequence[tuple[str, str]], *, refused: Sequence[Ref] = (),
           refused_change: tuple[str, str] | None = None, policy: bool = False) -> Scenario:
    """A request to change fields (label, new value) of `refs`, plus, optionally, a change the rules refuse."""
    wants = [_change_phrase(r, label, value) for r in refs for label, value in changes]
    unknown = ""
    behaviour = CONFIRM
    if refused and refused_change is not None:
        wants += [_change_phrase(r, *refused_change) for r in refused]
        behaviour = f"{CONFIRM} {ACCEPT}" if refs else ACCEPT
        if policy:
            unknown = f"You do not know whether the {refused_change[0]} can still be changed."
    return Scenario(reason="You want " + "; and you want ".join(wants) + ".", known=known_text([*refs, *refused]),
                    unknown=unknown, behaviour=behaviour)


def create(entity: str, parents: Sequence[Ref], values: Sequence[tuple[str, str]]) -> Scenario:
    details = ", ".join(f'{label} "{value}"' for label, value in values)
    whose = " and ".join(_name(p) for p in parents)
    return Scenario(reason=f"You want a new {entity} for {whose}" + (f", with {details}" if details else "") + ".",
                    known=known_text(parents), unknown=f"You do not know the id the new {entity} will get.",
                    behaviour=f"{CONFIRM} Ask the agent for the new {entity}'s id.")


def delete(refs: Sequence[Ref]) -> Scenario:
    return Scenario(reason="You want " + " and ".join(_name(r) for r in refs) + " removed.",
                    known=known_text(refs), unknown="", behaviour=f"{CONFIRM} {ACCEPT}")


def _change_phrase(ref: Ref, label: str, value: str) -> str:
    verb = VERBS.get(value.lower()) if label.endswith(("status", "state")) else None
    if verb:
        return f'to {verb} {_name(ref)} (its {label} becomes "{value}")'
    return f'the {label} of {_name(ref)} changed to "{value}"'


def _name(ref: Ref) -> str:
    return ref.name
