"""LLM judge: HLE's structured verdict over any ChatBackend.

The judge reads the question, the response and the correct answer, and returns HLE's four fields:
`extracted_final_answer`, `reasoning`, `correct` (yes/no) and `confidence` (0-100). The prompt is HLE's judge prompt
(cais/hle `judge_results.py`), with one addition: since a generic backend has no structured-output mode, it asks for
the four fields as `key: value` lines, and the parser also accepts a JSON object.

Invariants
- A reply that cannot be parsed (no `correct` field, or one that is neither yes nor no) is a verdict of incorrect,
  with the reason and the start of the reply recorded; it never raises.
- The judge's cost (`Completion.cost_usd`) is carried on the verdict, so graders report it apart from the
  orchestrator's spend (`Outcome.grader_cost_usd`).
- Infrastructure failures of the judge's backend (`BackendError`) propagate: an unreachable judge says nothing about
  the answer, so it must not be recorded as a wrong one.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from orchestra.backends.base import ChatBackend, Sampling
from orchestra.toolcalls import strip_think
from orchestra.types import Message

JUDGE_PROMPT = """Judge whether the following [response] to [question] is correct or not based on the precise and \
unambiguous [correct_answer] below.

[question]: {question}

[response]: {response}

Your judgement must be in the format and criteria specified below:

extracted_final_answer: The final exact answer extracted from the [response]. Put the extracted answer as 'None' if \
there is no exact, final answer to extract from the response.

[correct_answer]: {correct_answer}

reasoning: Explain why the extracted_final_answer is correct or incorrect based on [correct_answer], focusing only \
on if there are meaningful differences between [correct_answer] and the extracted_final_answer. Do not comment on \
any background to the problem, do not attempt to solve the problem, do not argue for any answer different than \
[correct_answer], focus only on whether the answers match.

correct: Answer 'yes' if extracted_final_answer matches the [correct_answer] given above, or is within a small \
margin of error for numerical problems. Answer 'no' otherwise, i.e. if there if there is any inconsistency, \
ambiguity, non-equivalency, or if the extracted answer is incorrect.

confidence: The extracted confidence score between 0% and 100% from [response]. Put 100 if there is no confidence \
score available.

Reply with exactly these four fields, one per line, as `extracted_final_answer: ...`, `reasoning: ...`, \
`correct: yes|no` and `confidence: <0-100>`."""

MAX_RESPONSE_CHARS = 20_000
JUDGE_SAMPLING = Sampling(temperature=0.0, max_tokens=2048)
_FIELDS = ("extracted_final_answer", "reasoning", "correct", "confidence")
_KEY_LINE = re.compile(r"^[\s*#>_`-]*([A-Za-z][A-Za-z _]*?)[\s*_`]*[:=][\s*`]*(.*)$")


@dataclass(frozen=True, slots=True)
class JudgeVerdict:
    """HLE's verdict fields, plus whether the reply parsed, why not, what judging cost and the raw reply."""

    correct: bool
    extracted_final_answer: str | None = None
    reasoning: str = ""
    confidence: int | None = None
    parsed: bool = True
    error: str | None = None
    cost_usd: float = 0.0
    raw: str = ""

    def summary(self) -> str:
        if not self.parsed:
            return f"judge reply could not be parsed ({self.error}): {self.raw[:200]!r}"
        answer = self.extracted_final_answer if self.extracted_final_answer is not None else "None"
        return f"judge: correct={'yes' if self.correct else 'no'}; extracted={answer!r}; {self.reasoning[:300]}"


class LLMJudge:
    """Judges answers with `backend` (any ChatBackend) using HLE's prompt and verdict fields."""

    def __init__(self, backend: ChatBackend, *, sampling: Sampling = JUDGE_SAMPLING,
                 prompt: str = JUDGE_PROMPT):
        self.backend = backend
        self.sampling = sampling
        self.prompt = prompt

    async def judge(self, question: str, response: str, correct_answer: str) -> JudgeVerdict:
        """One judge call; the verdict carries the call's cost whether or not the reply parsed."""
        text = self.prompt.format(
            question=question or "(not given)",
            response=response[:MAX_RESPONSE_CHARS],
            correct_answer=correct_answer,
        )
        completion = await self.backend.complete([Message("user", text)], [], self.sampling)
        verdict = parse_verdict(completion.text)
        return JudgeVerdict(
            correct=verdict.correct,
            extracted_final_answer=verdict.extracted_final_answer,
            reasoning=verdict.reasoning,
            confidence=verdict.confidence,
            parsed=verdict.parsed,
            error=verdict.error,
            cost_usd=completion.cost_usd,
            raw=completion.text,
        )


def parse_verdict(text: str) -> JudgeVerdict:
    """The verdict in a judge's reply: a JSON object (bare or fenced) or HLE `key: value` lines.

    Keys are matched loosely ("Extracted final answer", "**correct**:"); `correct` accepts yes/no/true/false;
    `confidence` accepts "85", "85%" or a number and is clamped to [0, 100]. Unparseable -> incorrect, `parsed=False`.
    """
    body = strip_think(text or "")
    fields = _json_fields(body) or _line_fields(body)
    if "correct" not in fields:
        return JudgeVerdict(False, parsed=False, error="no `correct` field", raw=text or "")
    correct = _yes_no(fields["correct"])
    if correct is None:
        return JudgeVerdict(False, parsed=False, error=f"`correct` is {str(fields['correct'])[:40]!r}, not yes/no",
                            raw=text or "")
    extracted = fields.get("extracted_final_answer")
    extracted_text = None if extracted is None or str(extracted).strip() in ("", "None") else str(extracted).strip()
    return JudgeVerdict(
        correct=correct,
        extracted_final_answer=extracted_text,
        reasoning=str(fields.get("reasoning", "")).strip(),
        confidence=_confidence(fields.get("confidence")),
        raw=text or "",
    )


def _key(name: str) -> str | None:
    squashed = re.sub(r"[^a-z]", "", name.lower())
    aliases = {"extractedfinalanswer": "extracted_final_answer", "extractedanswer": "extracted_final_answer",
               "finalanswer": "extracted_final_answer", "reasoning": "reasoning", "correct": "correct",
               "iscorrect": "correct", "confidence": "confidence"}
    return aliases.get(squashed)


def _json_fields(text: str) -> dict[str, Any]:
    """The first JSON object in `text` that has a `correct`-like key, with keys mapped to HLE's names."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            fields = {k: v for name, v in value.items() if (k := _key(str(name)))}
            if "correct" in fields:
                return fields
    return {}


def _line_fields(text: str) -> dict[str, str]:
    """HLE's `key: value` lines; a value runs on over following lines until the next known key."""
    fields: dict[str, list[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        match = _KEY_LINE.match(line)
        key = _key(match.group(1)) if match else None
        if key is not None and key not in fields:
            current = key
            fields[key] = [match.group(2)]  # type: ignore[union-attr]
        elif current is not None:
            fields[current].append(line)
    return {k: "\n".join(v).strip().strip("*` ").strip() for k, v in fields.items()}


def _yes_no(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    words = str(value).lower().split()
    first = re.sub(r"[^a-z]", "", words[0]) if words else ""
    return {"yes": True, "true": True, "no": False, "false": False}.get(first)


def _confidence(value: Any) -> int | None:
    if value is None or isinstance(value, bool):
        return None
    match = re.search(r"-?\d+(?:\.\d+)?", str(value))
    if not match:
        return None
    return int(round(min(100.0, max(0.0, float(match.group())))))
