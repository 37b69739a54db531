"""Trajectories survive a JSON round trip unchanged (the results store keeps them as JSONL)."""

import json

import pytest

from orchestra.trajectory import trajectory_from_dict, trajectory_to_dict
from orchestra.types import Completion, Message, Observation, Termination, ToolCall, Trajectory, Turn, Usage


def sample() -> Trajectory:
    call = ToolCall("c0", "ask", {"model": "gpt-4", "nested": {"k": [1, 2]}})
    broken = ToolCall("c1", "ask", {}, error="truncated JSON")
    completion = Completion("thinking", (call, broken), Usage(12, 3), 0.25, 0.5, "stop", "local-x",
                            prompt_ids=(1, 2, 3), completion_ids=(4, 5), logprobs=(-0.5, -1.25))
    obs = (Observation("c0", "ask", "B", cost_usd=0.01, latency_s=0.2, usage=Usage(5, 1), target="gpt-4"),
           Observation("c1", "ask", "malformed", status="format_error"))
    final = Completion("done", (ToolCall("c2", "answer", {"model": "gpt-4"}),))
    answer = (Observation("c2", "answer", "B", terminal=True, target="gpt-4"),)
    messages = (Message("system", "sys"), Message("user", "q ünïcode"), Message("assistant", "thinking", (call, broken)),
                Message("tool", "B", tool_call_id="c0", name="ask"))
    return Trajectory("task-1", messages, (Turn(0, completion, obs, 0.7), Turn(1, final, answer, 0.1)),
                      Termination.ANSWERED, final_answer="B", orchestrator="local-x", metadata={"seed": 3})


def test_round_trip_through_json_gives_an_equal_trajectory():
    tr = sample()
    data = json.loads(json.dumps(trajectory_to_dict(tr)))
    back = trajectory_from_dict(data)
    assert back == tr
    assert back.cost_usd == tr.cost_usd and back.tool_counts() == tr.tool_counts()
    assert back.turns[0].completion.completion_ids == (4, 5)


def test_unknown_format_or_broken_record_is_a_value_error():
    data = trajectory_to_dict(sample())
    with pytest.raises(ValueError, match="format"):
        trajectory_from_dict({**data, "format": 99})
    del data["turns"]
    with pytest.raises(ValueError, match="broken"):
        trajectory_from_dict(data)
