"""ReplayBackend reproduces recorded episodes exactly, at their recorded cost, and refuses unrecorded ones."""

import pytest

from orchestra import BackendError, Message, Sampling, ScriptedBackend, Termination, Toolbox, run_episode
from orchestra.backends.pricing import ModelPrice
from orchestra.backends.replay import ReplayBackend
from orchestra.trajectory import append_trajectory, read_trajectories
from tests.envs import routerbench_env


async def test_replay_reproduces_recorded_episodes(data_dir, tmp_path):
    env = routerbench_env(data_dir / "routerbench" / "winograde_train.csv")
    tasks = env.tasks()[:5]
    script = ['<tool_call>{"name": "ask", "arguments": {"model": "yi-34b"}}</tool_call>',
              '<tool_call>{"name": "answer", "arguments": {"model": "yi-34b"}}</tool_call>']
    path = tmp_path / "trajectories.jsonl"
    originals = []
    for task in tasks:
        instance = env.start(task)
        orchestrator = ScriptedBackend(list(script), model="recorded", price=ModelPrice(1.0, 1.0))
        trajectory = await run_episode(task, orchestrator, Toolbox.of(instance.tools))
        append_trajectory(path, trajectory)
        originals.append(trajectory)
    with path.open("a") as handle:
        handle.write('{"format": 1, "task_id": "torn')  # an interrupted append
    recorded = read_trajectories(path)
    assert recorded == originals
    replay = ReplayBackend(recorded)
    assert replay.model == "recorded" and len(replay) == 10
    for task, original in zip(tasks, originals, strict=True):
        instance = env.start(task)
        again = await run_episode(task, replay, Toolbox.of(instance.tools))
        assert again.termination is Termination.ANSWERED
        assert again.messages == original.messages
        assert again.cost_usd == pytest.approx(original.cost_usd)
        assert again.orchestrator_cost_usd == original.orchestrator_cost_usd > 0


async def test_unrecorded_conversation_is_an_error():
    replay = ReplayBackend([])
    with pytest.raises(BackendError, match="not recorded"):
        await replay.complete([Message("user", "new question")], [], Sampling())
