"""The `qa` environment: loading HLE and FRAMES files, splits, the answer tool, and graded end-to-end episodes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orchestra.backends.pricing import ModelPrice
from orchestra.backends.scripted import ScriptedBackend
from orchestra.envs.qa import env as qa
from orchestra.envs.qa.env import QAEnvironment, answer_tool, detect_format
from orchestra.envs.qa.judge import LLMJudge
from orchestra.errors import ConfigError
from orchestra.paths import shared_data
from orchestra.preferences import Limits
from orchestra.rollout.batch import run_task
from orchestra.rollout.episode import run_episode
from orchestra.tools.spec import ToolContext
from orchestra.tools.toolbox import Toolbox
from orchestra.types import Termination

HLE = shared_data() / "hle" / "hle_20.jsonl"
FRAMES = shared_data() / "frames" / "frames.jsonl"
needs_data = pytest.mark.skipif(not (HLE.is_file() and FRAMES.is_file()), reason="shared data not present")


def _write(path: Path, rows: list[dict | str]) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def _call(name: str, **arguments: str) -> str:
    return f'<tool_call>\n{json.dumps({"name": name, "arguments": arguments})}\n</tool_call>'


# --- loading -------------------------------------------------------------------------------------------------------

@needs_data
def test_hle_file_loads_with_answer_types() -> None:
    env = qa.hle()
    tasks = env.tasks()
    assert env.name == "hle" and env.format == "hle" and len(tasks) == 20 and env.skipped_image_rows == 0
    types = [t.metadata["answer_type"] for t in tasks]
    assert types.count("multipleChoice") == 4 and types.count("exactMatch") == 16
    first = tasks[0]
    assert first.id == "6721a42269600ecb23a3e623"
    assert first.prompt.startswith("Consider the following boundary-value problem")
    assert first.metadata["answer"] == "4(10^{20} - 0.5)/(10^{40} + 1)"
    assert "`answer`" in first.system and first.metadata["category"] == "Math"


@needs_data
def test_frames_file_is_detected_and_limited() -> None:
    env = QAEnvironment(FRAMES, limit=5)
    tasks = env.tasks()
    assert env.format == "frames" and env.name == "frames" and len(env.items) == 824
    assert [t.id for t in tasks] == [f"wiki____{i}" for i in range(5)]
    assert tasks[0].metadata["answer"] == "Jane Ballou" and tasks[0].metadata["answer_type"] == "freeform"


def test_detect_format() -> None:
    assert detect_format({"id": "1", "question": "q", "answer": "a", "answer_type": "exactMatch"}) == "hle"
    assert detect_format({"id": "1", "question": "q", "answer": "a"}) == "frames"
    with pytest.raises(ConfigError, match="cannot tell the format"):
        detect_format({"prompt": "q"})


@pytest.mark.parametrize(("rows", "kwargs", "message"), [
    ([{"question": "q", "answer": "a"}, "{not json"], {}, r"bad.jsonl:2 is not valid JSON"),
    ([{"question": "q", "answer": "a"}], {"format": "hle"}, r"lacks id, answer_type"),
    ([{"id": "1", "question": "q", "answer": "a", "answer_type": "essay"}], {}, r"answer_type 'essay'"),
    ([{"id": "1", "question": "q", "answer": ""}], {}, r"lacks answer"),
    ([{"id": "1", "question": "q", "answer": "a"}, {"id": "1", "question": "r", "answer": "b"}], {}, "repeats id"),
    ([["a list"]], {}, "not a JSON object"),
    ([{"question": "q", "answer": "a"}], {"format": "squad"}, "use auto, hle or frames"),
    ([{"question": "q", "answer": "a"}], {"limit": -1}, "limit"),
])
def test_bad_files_are_config_errors(tmp_path: Path, rows: list, kwargs: dict, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    with pytest.raises(ConfigError, match=message):
        QAEnvironment(path, **kwargs)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        QAEnvironment(tmp_path / "nope.jsonl")


def test_image_rows_are_left_out_and_ids_fall_back(tmp_path: Path) -> None:
    path = _write(tmp_path / "mini.jsonl", [
        {"id": "t", "question": "2+2?", "answer": "4", "answer_type": "exactMatch", "image": ""},
        {"id": "i", "question": "What is shown?", "answer": "cat", "answer_type": "exactMatch", "image": "data:..."},
        "",
    ])
    env = QAEnvironment(path)
    assert [t.id for t in env.tasks()] == ["t"] and env.skipped_image_rows == 1
    frames_path = _write(tmp_path / "f.jsonl", [{"question": "q", "answer": "a"}])
    assert QAEnvironment(frames_path).tasks()[0].id == "f-1"


# --- splits --------------------------------------------------------------------------------------------------------

@needs_data
def test_dev_and_test_partition_the_items_stably() -> None:
    env = QAEnvironment(FRAMES)
    dev, test = {t.id for t in env.tasks("dev")}, {t.id for t in env.tasks("test")}
    assert dev.isdisjoint(test) and len(dev | test) == 824
    assert 0.12 < len(dev) / 824 < 0.28
    assert dev == {t.id for t in QAEnvironment(FRAMES).tasks("dev")}
    assert len(QAEnvironment(FRAMES, limit=3).tasks("test")) == 3


@needs_data
def test_slice_split_and_refused_splits() -> None:
    env = QAEnvironment(HLE)
    assert [t.id for t in env.tasks("2:4")] == [i.id for i in env.items[2:4]]
    assert len(env.tasks(":3")) == 3 and len(env.tasks("all")) == 20
    with pytest.raises(ConfigError, match="never trained on"):
        env.tasks("train")
    with pytest.raises(ConfigError, match="START:STOP"):
        env.tasks("validation")


# --- the answer tool -----------------------------------------------------------------------------------------------

async def test_answer_tool_is_terminal_and_refuses_empty_answers() -> None:
    t = answer_tool()
    assert t.name == "answer" and t.spec.parameters["required"] == ["text"]
    out = await t.invoke({"text": "  Jane Ballou "}, ToolContext("task", "c1"))
    assert out.terminal and out.content == "Jane Ballou" and not out.is_error
    empty = await t.invoke({"text": " "}, ToolContext("task", "c2"))
    assert empty.is_error and not empty.terminal


def test_start_needs_qa_metadata(tmp_path: Path) -> None:
    from orchestra.task import Task

    env = QAEnvironment(_write(tmp_path / "f.jsonl", [{"question": "q", "answer": "a"}]))
    with pytest.raises(ConfigError, match="metadata"):
        env.start(Task(id="x", prompt="q"))


# --- end to end ----------------------------------------------------------------------------------------------------

async def _episode(env: QAEnvironment, index: int, replies: list[str], price: ModelPrice | None = None,
                   limits: Limits | None = None):
    task = env.tasks()[index]
    instance = env.start(task)
    orchestrator = ScriptedBackend(replies, price=price)
    trajectory = await run_episode(instance.task, orchestrator, Toolbox.of(instance.tools), limits=limits or Limits())
    return trajectory, await instance.grade(trajectory)


@needs_data
@pytest.mark.parametrize(("answer", "solved"), [
    ("4(10^{20} - 0.5)/(10^{40} + 1)", True),
    ("$4(10^{20} - 0.5)/(10^{40} + 1)$", True),
    ("4(10^{20} + 0.5)/(10^{40} + 1)", False),
])
async def test_hle_first_item_end_to_end(answer: str, solved: bool) -> None:
    trajectory, outcome = await _episode(qa.hle(), 0, ["Let me think.\n" + _call("answer", text=answer)])
    assert trajectory.termination == Termination.ANSWERED and trajectory.final_answer == answer.strip()
    assert outcome.solved is solved and outcome.breakdown["outcome"] == float(solved)
    assert outcome.grader_cost_usd == 0.0


@needs_data
@pytest.mark.parametrize(("reply", "solved"), [
    ("The answer is (B).", True),
    ("Answer: C", False),
])
async def test_hle_multiple_choice_final_message(reply: str, solved: bool) -> None:
    env = qa.hle()
    assert env.tasks()[2].metadata["answer"] == "B"
    trajectory, outcome = await _episode(env, 2, [reply])
    assert trajectory.termination == Termination.FINAL_MESSAGE
    assert outcome.solved is solved and outcome.details.startswith("choice")


@needs_data
@pytest.mark.parametrize(("replies", "solved", "method"), [
    ([_call("answer", text="Jane Ballou")], True, "exact"),
    (["Her name would be Jane Ballou."], True, "contains"),
    ([_call("answer", text="")] + [_call("answer", text="jane ballou")], True, "exact"),  # retried after an error
    ([_call("answer", text="Jane Smith")], False, "exact"),
    ([_call("search", query="first ladies")] * 2, False, "no_answer"),  # an unknown tool, then the turn cap
])
async def test_frames_first_item_end_to_end(replies: list[str], solved: bool, method: str) -> None:
    trajectory, outcome = await _episode(qa.frames(limit=1), 0, replies, limits=Limits(max_turns=2))
    assert outcome.solved is solved
    assert (trajectory.termination == Termination.MAX_TURNS) is (method == "no_answer")
    assert outcome.details.split(":")[0] == method


@needs_data
@pytest.mark.parametrize(("verdict", "solved"), [
    ("extracted_final_answer: Jane Ballou\nreasoning: same name\ncorrect: yes\nconfidence: 95", True),
    ('{"extracted_final_answer": "Jane", "reasoning": "surname missing", "correct": "no", "confidence": 100}', False),
    ("I cannot judge this.", False),
])
async def test_judge_grading_keeps_its_cost_apart(verdict: str, solved: bool) -> None:
    judge_backend = ScriptedBackend([verdict], model="judge", price=ModelPrice(10.0, 30.0))
    env = qa.frames(limit=1, judge=LLMJudge(judge_backend))
    trajectory, outcome = await _episode(env, 0, [_call("answer", text="Jane Ballou")], price=ModelPrice(1.0, 1.0))
    assert outcome.solved is solved
    assert outcome.grader_cost_usd > 0 and trajectory.cost_usd > 0
    assert outcome.grader_cost_usd != pytest.approx(trajectory.cost_usd)
    assert trajectory.cost_usd == pytest.approx(trajectory.orchestrator_cost_usd)  # the judge is not in the episode
    sent = judge_backend.requests[0][0].content
    assert "[correct_answer]: Jane Ballou" in sent and "15th first lady" in sent
    if verdict.startswith("I cannot"):
        assert "could not be parsed" in outcome.details


@needs_data
async def test_run_task_grades_through_the_environment() -> None:
    env = qa.hle(limit=2)
    result = await run_task(env, env.tasks()[1], ScriptedBackend([_call("answer", text="$1$")]))
    assert result.outcome.solved and result.trajectory.final_answer == "$1$"
