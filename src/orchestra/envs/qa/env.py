"""The `qa` environment: question answering over JSONL files in the HLE or FRAMES format.

Formats (detected from the first record unless given)
- HLE (cais/hle): `id`, `question`, `answer`, `answer_type` ("exactMatch" | "multipleChoice"), plus metadata
  (`category`, `raw_subject`, `image`, `canary`, ...). Rows that need an image are left out: this environment is
  text-only, like the paper's HLE evaluation; `QAEnvironment.skipped_image_rows` counts them.
- FRAMES (google/frames-benchmark): `id`, `question`, `answer`; graded as free-form answers (`freeform`).

Tasks bring no tools of their own except `answer(text)`, a terminal tool whose text is the final answer; the pool
supplies search, code and expert models. A final message without a tool call is also a final answer
(`Trajectory.final_answer` covers both). Grading is `orchestra.envs.qa.graders.grade_answer` with the environment's
judge, if any; the judge's cost is reported on `Outcome.grader_cost_usd`, never added to the episode's spend.

Splits: these are evaluation sets, so there is no "train" split (HLE carries a canary string and must never be
trained on). `tasks(split)` takes None or "all", "dev" / "test" (a fixed partition by a hash of the id, `dev_fraction`
of the items in dev), or an index slice "START:STOP"; `limit` then keeps the first N in file order.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from orchestra.envs.base import Instance, Outcome
from orchestra.envs.qa.graders import ANSWER_TYPES, DEFAULT_ABS_TOL, DEFAULT_REL_TOL, grade_answer
from orchestra.envs.qa.judge import LLMJudge
from orchestra.errors import ConfigError
from orchestra.task import Task
from orchestra.tools.spec import Tool, ToolOutput, tool
from orchestra.types import Trajectory

QAFormat = Literal["hle", "frames"]
_REQUIRED: dict[str, tuple[str, ...]] = {"hle": ("id", "question", "answer", "answer_type"),
                                         "frames": ("question", "answer")}
ANSWER_INSTRUCTIONS = {
    "multipleChoice": "This is a multiple-choice question. When you are done, call `answer` with the letter of "
                      "the correct choice only.",
    "exactMatch": "When you are done, call `answer` with your final answer only: no explanation, as short as possible.",
    "freeform": "When you are done, call `answer` with your final answer only: a short phrase, name or number.",
}


@dataclass(frozen=True, slots=True)
class QAItem:
    """One question with its gold answer. `answer_type` is HLE's, or "freeform" for FRAMES."""

    id: str
    question: str
    answer: str
    answer_type: str
    format: str
    category: str = ""


def detect_format(record: Mapping[str, Any]) -> QAFormat:
    """"hle" when the record has `answer_type`, "frames" when it has `question` and `answer`."""
    if "answer_type" in record:
        return "hle"
    if "question" in record and "answer" in record:
        return "frames"
    raise ConfigError(
        f"qa data: cannot tell the format of a record with keys {sorted(record)}; expected HLE "
        "(id, question, answer, answer_type) or FRAMES (id, question, answer)"
    )


def load_items(path: str | Path, format: str = "auto") -> tuple[list[QAItem], int]:
    """(items, rows left out because they need an image) from a JSONL file. Errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"qa data: {path} does not exist (pass the path of an HLE or FRAMES .jsonl file)")
    if format not in ("auto", "hle", "frames"):
        raise ConfigError(f"qa format {format!r}: use auto, hle or frames")
    items: list[QAItem] = []
    skipped = 0
    seen: set[str] = set()
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"qa data: {path}:{lineno} is not valid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise ConfigError(f"qa data: {path}:{lineno} is not a JSON object")
            if format == "auto":
                format = detect_format(record)
            item = _item(record, format, f"{path.stem}-{lineno}", f"{path}:{lineno}")
            if format == "hle" and record.get("image"):
                skipped += 1
                continue
            if item.id in seen:
                raise ConfigError(f"qa data: {path}:{lineno} repeats id {item.id!r}")
            seen.add(item.id)
            items.append(item)
    return items, skipped


class QAEnvironment:
    """Question answering over one JSONL file (see the module docstring).

    `judge` grades HLE exactMatch and FRAMES answers when given (multiple choice never needs it); `rel_tol`,
    `abs_tol` and `percent` configure the numeric grader used without a judge.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        name: str | None = None,
        format: str = "auto",
        limit: int | None = None,
        judge: LLMJudge | None = None,
        dev_fraction: float = 0.2,
        rel_tol: float = DEFAULT_REL_TOL,
        abs_tol: float = DEFAULT_ABS_TOL,
        percent: bool = False,
    ):
        if limit is not None and limit < 0:
            raise ConfigError("qa limit: must be >= 0")
        if not 0.0 <= dev_fraction <= 1.0:
            raise ConfigError("qa dev_fraction: must be in [0, 1]")
        self.path = Path(path)
        self.items, self.skipped_image_rows = load_items(self.path, format)
        self.format = self.items[0].format if self.items else format
        self.name = name or (self.format if self.format in _REQUIRED else "qa")
        self.limit = limit
        self.judge = judge
        self.dev_fraction = dev_fraction
        self._tolerance = {"rel_tol": rel_tol, "abs_tol": abs_tol, "percent": percent}

    def tasks(self, split: str | None = None) -> list[Task]:
        chosen = self._split(split)
        if self.limit is not None:
            chosen = chosen[: self.limit]
        return [self.task(item) for item in chosen]

    def task(self, item: QAItem) -> Task:
        metadata = {"answer": item.answer, "answer_type": item.answer_type, "format": item.format}
        if item.category:
            metadata["category"] = item.category
        return Task(id=item.id, prompt=item.question, system=ANSWER_INSTRUCTIONS[item.answer_type],
                    metadata=metadata)

    def start(self, task: Task) -> Instance:
        gold, answer_type = task.metadata.get("answer"), task.metadata.get("answer_type")
        if not isinstance(gold, str) or answer_type not in ANSWER_TYPES:
            raise ConfigError(f"qa task {task.id!r}: metadata needs `answer` and `answer_type` (use QAEnvironment.tasks)")
        judge, tolerance = self.judge, self._tolerance

        async def grade(trajectory: Trajectory) -> Outcome:
            result = await grade_answer(trajectory.final_answer, gold, answer_type, judge,
                                        question=task.prompt, **tolerance)  # type: ignore[arg-type]
            breakdown = {"outcome": float(result.correct)}
            if result.confidence is not None:
                breakdown["judge_confidence"] = float(result.confidence)
            details = f"{result.method}: {result.details}" if result.details else result.method
            return Outcome(result.correct, float(result.correct), breakdown, details, result.cost_usd)

        return Instance(task, [answer_tool()], grade)

    def _split(self, split: str | None) -> list[QAItem]:
        if split in (None, "all"):
            return list(self.items)
        if split in ("dev", "test"):
            want_dev = split == "dev"
            return [i for i in self.items if _in_dev(i.id, self.dev_fraction) == want_dev]
        if split == "train":
            raise ConfigError("qa split 'train': HLE and FRAMES are evaluation sets and are never trained on; "
                              "use all, dev, test or START:STOP")
        if ":" in split:
            start, _, stop = split.partition(":")
            try:
                return self.items[int(start) if start else None: int(stop) if stop else None]
            except ValueError:
                pass
        raise ConfigError(f"qa split {split!r}: use all, dev, test or START:STOP (e.g. 0:50)")


def answer_tool() -> Tool:
    """The terminal `answer(text)` tool: its text becomes the trajectory's final answer."""

    def answer(text: str) -> ToolOutput:
        """Submit your final answer; this ends the task.

        Args:
            text: the final answer only (for multiple choice, just the letter)
        """
        if not text.strip():
            return ToolOutput("error: the answer is empty; call `answer` again with your final answer", is_error=True)
        return ToolOutput(text.strip(), terminal=True)

    return tool(answer)


def hle(path: str | Path | None = None, **kwargs: Any) -> QAEnvironment:
    """The HLE environment over `path` (default: the shared data's hle/hle_20.jsonl)."""
    from orchestra.paths import shared_data

    return QAEnvironment(path or shared_data() / "hle" / "hle_20.jsonl", format="hle", **kwargs)


def frames(path: str | Path | None = None, **kwargs: Any) -> QAEnvironment:
    """The FRAMES environment over `path` (default: the shared data's frames/frames.jsonl)."""
    from orchestra.paths import shared_data

    return QAEnvironment(path or shared_data() / "frames" / "frames.jsonl", format="frames", **kwargs)


def _item(record: Mapping[str, Any], format: str, fallback_id: str, where: str) -> QAItem:
    missing = [k for k in _REQUIRED[format] if record.get(k) in (None, "")]
    if missing:
        raise ConfigError(f"qa data: {where} lacks {', '.join(missing)} (format {format})")
    answer_type = str(record["answer_type"]) if format == "hle" else "freeform"
    if answer_type not in ("exactMatch", "multipleChoice") and format == "hle":
        raise ConfigError(f"qa data: {where} has answer_type {answer_type!r}; expected exactMatch or multipleChoice")
    return QAItem(
        id=str(record.get("id") or fallback_id),
        question=str(record["question"]),
        answer=str(record["answer"]).strip(),
        answer_type=answer_type,
        format=format,
        category=str(record.get("category") or ""),
    )


def _in_dev(item_id: str, dev_fraction: float) -> bool:
    """A fixed, order-independent partition: the id's hash in [0, 1) below `dev_fraction`."""
    digest = hashlib.sha256(item_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < dev_fraction
