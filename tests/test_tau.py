"""τ²-format environments: golden replay, grading, tools, modes and the simulated user, on the shared τ² data."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from orchestra import Limits, ScriptedBackend, Toolbox, run_episode
from orchestra.envs.tau.domains import base_digests
from orchestra.envs.tau.env import TauEnvironment, TauInstance, check_domain
from orchestra.envs.tau.grade import GoldenAction, communicated
from orchestra.envs.tau.user_sim import LEFT, STOP
from orchestra.errors import ConfigError
from orchestra.paths import shared_data
from orchestra.task import Task
from orchestra.toolcalls import render_hermes
from orchestra.types import Message, Termination, ToolCall, Trajectory

DATA = shared_data() / "tau2"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"τ² data not found at {DATA}")
DOMAINS = ("retail", "telecom", "mock")
TASK_COUNTS = {"retail": 114, "telecom": 20, "mock": 10}

# Golden actions that fail by design of the data (the reference trajectory includes the mistake).
EXPECTED_FAILURES = {
    "retail": {
        ("2", "2_1"), ("3", "3_1"), ("4", "4_1"),  # a product id that does not exist, then the right one
        ("35", "35_0"), ("37", "37_0"), ("38", "38_0"), ("54", "54_0"), ("55", "55_0"),  # the user's wrong email
        ("39", "39_0"), ("67", "67_0"), ("67", "67_1"), ("68", "68_0"),  # the user's old or mistyped zip code
        ("46", "46_1"), ("46", "46_2"), ("47", "47_1"), ("47", "47_2"),  # order ids without their 'W'
        ("64", "64_6"),  # an exchange tried on a pending order before the item modification that works
        ("105", "106_0"),  # the user's only gift card cannot cover the price difference (policy): nothing changes
    },
    "telecom": set(),
    "mock": set(),
}
# Tasks an empty trajectory solves: the policy makes the agent refuse and nothing is to be communicated (retail),
# or the only criterion is an NL assertion this grader does not judge (mock).
TRIVIAL = {"retail": {"10", "12", "25", "50", "57", "65", "105"}, "telecom": set(), "mock": {"create_task_1_nl_eval"}}
# Actions a task's env assertions need that its golden list leaves out (the scenario asks the user, or the agent, to
# do them): added to the golden script.
EXTRA_ACTIONS = {
    "update_task_with_history_and_env_assertions": [("update_task_status", {"task_id": "task_2",
                                                                             "status": "completed"})],
    "update_task_with_user_tools": [("dismiss_notification", {"notification_id": "notif_1"})],
}


@pytest.fixture(scope="session")
def envs() -> dict[str, TauEnvironment]:
    return {d: TauEnvironment(d) for d in DOMAINS}


def golden_replies(env: TauEnvironment, task: Task) -> list[str]:
    spec = env.spec(task)
    calls = [(a.name, dict(a.arguments)) for a in spec.actions] + EXTRA_ACTIONS.get(spec.id, [])
    return [render_hermes(n, a) for n, a in calls] + ["All done. " + " ".join(spec.communicate_info)]


async def run_script(env: TauEnvironment, task: Task, replies: list[str]) -> tuple[TauInstance, Trajectory, object]:
    instance = env.start(task)
    trajectory = await run_episode(instance.task, ScriptedBackend(replies), Toolbox.of(instance.tools),
                                   limits=Limits(max_turns=len(replies) + 1))
    return instance, trajectory, await instance.grade(trajectory)


def empty_trajectory(task: Task) -> Trajectory:
    return Trajectory(task.id, (), (), Termination.FINAL_MESSAGE, final_answer="")


# ---- acceptance: replay, golden success, empty failure -----------------------------------------------------------

@pytest.mark.parametrize("domain", DOMAINS)
def test_check_domain_replays_every_golden_action(domain: str) -> None:
    report = check_domain(DATA / domain)
    assert report.tasks == TASK_COUNTS[domain]
    assert {(e.task_id, e.action_id) for e in report.errors} == EXPECTED_FAILURES[domain], report.render()
    assert report.ok and report.setup_errors == ()


@pytest.mark.parametrize("domain", DOMAINS)
async def test_golden_actions_through_run_episode_grade_as_success(envs, domain: str) -> None:
    env, failures = envs[domain], []
    for i, task in enumerate(env.tasks()):
        instance, trajectory, outcome = await run_script(env, task, golden_replies(env, task))
        assert trajectory.termination is Termination.FINAL_MESSAGE
        if not outcome.solved:
            failures.append((task.id, dict(outcome.breakdown), outcome.details))
        if i % 10 == 0:
            assert instance.db.canonical_hash() == instance.db.canonical_hash(full=True)
    assert failures == []
    # copy-on-write: every write went to the episode's own copy, so the shared data is as loaded
    assert base_digests(env._base) == env._digests


@pytest.mark.parametrize("domain", DOMAINS)
async def test_empty_trajectory_fails_every_task_with_effective_writes(envs, domain: str) -> None:
    env = envs[domain]
    solved_empty = set()
    for task in env.tasks():
        spec = env.spec(task)
        outcome = await env.start(task).grade(empty_trajectory(task))
        if outcome.solved:
            solved_empty.add(spec.id)
        if env.golden(spec).changed:
            assert not outcome.solved, task.id
    assert solved_empty == TRIVIAL[domain]


# ---- grading components ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("info", "text", "found"), [
    ("1,234.5", "your total is 1234.50 dollars", True),
    ("1234.50", "Total: $1,234.5.", True),
    ("481.5", "a refund of $481.50", True),
    ("60", "you paid $60.00", True),
    ("10", "there are 100 options", False),
    ("10", "it costs 10.5", False),
    ("camera", "The Camera is delivered", True),
    ("943 Maple Drive", "943  maple drive, Suite 356", True),
    ("829.43", "about 829 dollars", False),
])
def test_communicated_is_case_and_number_format_tolerant(info: str, text: str, found: bool) -> None:
    assert communicated(info, [text]) is found


async def test_communicate_counts_under_nl_assertion_basis_and_not_under_db_only(envs) -> None:
    env = envs["retail"]
    task = env.task("16")  # communicate_info ['8276.23'], basis DB + NL_ASSERTION
    silent = golden_replies(env, task)[:-1] + ["Done."]
    _, _, outcome = await run_script(env, task, silent)
    assert outcome.breakdown["db_match"] == 1.0 and outcome.breakdown["communicate"] == 0.0
    assert not outcome.solved
    db_only = env.add_task(replace(env.spec(task), id="16-db-only", reward_basis=frozenset({"DB"})))
    _, _, outcome = await run_script(env, db_only, silent)
    assert outcome.solved


async def test_touched_criterion_needs_the_golden_records_written(envs) -> None:
    env = envs["mock"]
    task = env.task("update_task_1")
    noop = GoldenAction("noop", "update_task_status", {"task_id": "task_1", "status": "pending"})  # already pending
    task = env.add_task(replace(env.spec(task), id="noop-write", actions=(noop,), reward_basis=frozenset({"DB"})))
    outcome = await env.start(task).grade(empty_trajectory(task))
    assert outcome.breakdown["db_match"] == 1.0 and outcome.breakdown["touched"] == 0.0
    assert not outcome.solved
    _, _, outcome = await run_script(env, task, [render_hermes(noop.name, dict(noop.arguments)), "Done."])
    assert outcome.solved


async def test_action_criterion_compares_only_compare_args(envs) -> None:
    env = envs["mock"]
    task = env.task("impossible_task_1")  # transfer_to_human_agents, compare_args [] (name only)
    _, _, outcome = await run_script(env, task, [render_hermes("transfer_to_human_agents", {"summary": "x"}), "Bye"])
    assert outcome.solved and outcome.breakdown["actions"] == 1.0
    _, _, outcome = await run_script(env, task, ["I cannot delete tasks."])
    assert not outcome.solved and outcome.breakdown["actions"] == 0.0


async def test_telecom_env_assertions_follow_the_phone_model(envs) -> None:
    env = envs["telecom"]
    task = env.task("[mobile_data_issue]data_usage_exceeded[PERSONA:Easy]")
    refuel = {"customer_id": "C1001", "line_id": "L1002"}
    _, _, outcome = await run_script(env, task, [render_hermes("refuel_data", {**refuel, "gb_amount": 1.0}), "ok"])
    assert outcome.breakdown["env_assertions"] == pytest.approx(2 / 3)  # data back, but not the 2 GB asked for
    assert not outcome.solved
    # a resumed line gives service only after a reboot
    task = env.task("[service_issue]overdue_bill_suspension[PERSONA:Easy]")
    steps = [("send_payment_request", {"customer_id": "C1001", "bill_id": "B1234321"}), ("make_payment", {}),
             ("resume_line", refuel)]
    instance, trajectory, outcome = await run_script(env, task, [render_hermes(n, a) for n, a in steps] + ["ok"])
    assert not outcome.solved
    assert "connection\": \"no_service" in (await Toolbox.of(instance.tools).call(
        ToolCall("c1", "check_network_status"))).content
    _, _, outcome = await run_script(env, task, [render_hermes(n, a) for n, a in steps]
                                     + [render_hermes("reboot_device", {}), "ok"])
    assert outcome.solved


# ---- tools ---------------------------------------------------------------------------------------------------------

def test_tools_have_schemas_docs_and_access_marks(envs) -> None:
    for env in envs.values():
        instance = env.start(env.tasks()[0])
        for t in instance.tools:
            if t.name == "ask_user":
                continue
            assert t.spec.description and t.metadata["access"] in ("read", "write"), t.name
            assert all(p.get("description") for p in t.spec.parameters["properties"].values()), t.name
            assert (t.context_param == "ctx") == (t.metadata["access"] == "write"), t.name
    tools = {t.name: t for t in envs["retail"].start(envs["retail"].task("0")).tools}
    params = tools["modify_pending_order_items"].spec.parameters
    assert params["required"] == ["order_id", "item_ids", "new_item_ids", "payment_method_id"]
    assert params["properties"]["item_ids"]["type"] == "array" and params["additionalProperties"] is False
    assert tools["cancel_pending_order"].metadata == {"access": "write", "side": "assistant"}


async def test_tool_errors_are_observations_with_clear_messages(envs) -> None:
    instance = envs["retail"].start(envs["retail"].task("0"))
    box = Toolbox.of(instance.tools)
    missing = await box.call(ToolCall("c1", "get_order_details", {"order_id": "#W0"}))
    assert missing.status == "tool_error" and "order '#W0' not found" in missing.content
    malformed = await box.call(ToolCall("c2", "cancel_pending_order", {"order_id": 5}))
    assert malformed.status == "format_error" and "reason" in malformed.content
    assert instance.db.touched == set()
    assert (await box.call(ToolCall("c3", "calculate", {"expression": "(2 + 3) * 1.5"}))).content == "7.5"
    hostile = await box.call(ToolCall("c4", "calculate", {"expression": "__import__('os').system('true')"}))
    assert hostile.status == "tool_error"


async def test_write_tool_applies_once_per_call_id(envs) -> None:
    """RELIABILITY F12: a side-effecting call retried with the same call id is applied once."""
    env = envs["retail"]
    instance = env.start(env.task("0"))
    box = Toolbox.of(instance.tools)
    order_id = next(k for k, o in env._base["orders"].items()
                    if o["status"] == "pending" and "gift_card" in o["payment_history"][0]["payment_method_id"])
    order = env._base["orders"][order_id]
    card = order["payment_history"][0]["payment_method_id"]
    balance = env._base["users"][order["user_id"]]["payment_methods"][card]["balance"]
    call = ToolCall("retry-1", "cancel_pending_order", {"order_id": order_id, "reason": "no longer needed"})
    first, again = await box.call(call), await box.call(call)
    assert first.status == again.status == "ok" and first.content == again.content
    after = instance.db.get("orders", order_id)
    assert [p["transaction_type"] for p in after["payment_history"]] == ["payment", "refund"]
    new_balance = instance.db.get("users", order["user_id"])["payment_methods"][card]["balance"]
    assert new_balance == pytest.approx(balance + order["payment_history"][0]["amount"])
    other = await box.call(replace(call, id="retry-2"))  # a new call is a new action: the order is cancelled now
    assert other.status == "tool_error" and "'cancelled'" in other.content


async def test_episodes_are_isolated(envs) -> None:
    env = envs["mock"]
    task = env.task("update_task_1")
    a, b = env.start(task), env.start(task)
    await Toolbox.of(a.tools).call(ToolCall("c1", "update_task_status", {"task_id": "task_1", "status": "completed"}))
    assert a.db.get("tasks", "task_1")["status"] == "completed"
    assert b.db.get("tasks", "task_1")["status"] == "pending"
    assert env._base["tasks"]["task_1"]["status"] == "pending"


# ---- tasks, prompts, initial state ---------------------------------------------------------------------------------

def test_tasks_splits_and_prompts(envs) -> None:
    retail = envs["retail"]
    assert len(retail.tasks("train")) == 74 and len(retail.tasks("test")) == 40
    with pytest.raises(ConfigError, match="unknown"):
        retail.tasks("dev")
    task = retail.task("0")
    assert "clicky switches" in task.prompt and "Yusuf Rossi" in task.prompt and "email" in task.prompt
    assert "Retail agent policy" in task.system and task.id == "retail/0"
    assert json.loads(json.dumps(dict(task.metadata))) == {"domain": "retail", "tau_id": "0"}  # results stores
    with pytest.raises(ConfigError, match="already exists"):
        retail.add_task(retail.spec(task))
    with pytest.raises(ConfigError, match="not a task of tau/retail"):
        retail.start(envs["mock"].tasks()[0])
    telecom = envs["telecom"].tasks()[0]
    assert "Telecom Agent Policy" in telecom.system
    assert "Understanding and Troubleshooting" in telecom.system
    names = {t.name for t in envs["telecom"].start(telecom).tools}
    assert {"enable_roaming", "toggle_roaming", "run_speed_test"} <= names and "ask_user" not in names


def test_initial_state_applies_data_actions_and_history(envs) -> None:
    env = envs["mock"]
    db = env.initial_db(env.specs["update_task_with_initialization_data"])
    assert db.get("tasks", "task_2")["title"] == "Project Review"
    assert db.get("users", "user_1")["tasks"] == ["task_1", "task_2"] and db.touched == set()
    history = env.task("update_task_with_message_history")
    assert env.start(history).db.get("tasks", "task_2")["status"] == "pending"  # created by the history's call
    assert "Agent called create_task" in history.prompt


def test_bad_paths_and_domains_are_config_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        check_domain(tmp_path / "retail")
    with pytest.raises(ConfigError, match="unknown"):
        TauEnvironment("airline", path=tmp_path)


# ---- simulated user ------------------------------------------------------------------------------------------------

def scripted_customer(messages: list[Message]) -> str:
    """Plays the mock notification scenario: checks the inbox, asks for the update, dismisses, stops."""
    last = messages[-1]
    said = [m.content for m in messages if m.role == "user"]
    if last.role == "user" and len(said) == 1:
        return render_hermes("check_notifications", {})
    if last.role == "tool" and last.name == "check_notifications":
        return "I finished task_1 ('Test task'); please mark it completed."
    if last.role == "user" and "completed" in last.content:
        return render_hermes("dismiss_notification", {"notification_id": "notif_1"})
    return f"Thanks! {STOP}"


async def test_user_simulator_mode_grades_user_side_actions() -> None:
    user = ScriptedBackend(scripted_customer, model="customer")
    env = TauEnvironment("mock", user=user)
    assert env.mode == "user"
    task = env.task("update_task_with_user_tools")
    assert "ask_user" in task.prompt and "check_notifications" not in task.prompt
    replies = [render_hermes("ask_user", {"message": "Hello, how can I help?"}),
               render_hermes("update_task_status", {"task_id": "task_1", "status": "completed"}),
               render_hermes("ask_user", {"message": "task_1 is now completed."}),
               render_hermes("ask_user", {"message": "Anything else?"}),
               "Goodbye."]
    instance, trajectory, outcome = await run_script(env, task, replies)
    names = {t.name for t in instance.tools}
    assert "ask_user" in names and "dismiss_notification" not in names
    observations = [o for o in trajectory.observations if o.name == "ask_user"]
    assert "mark it completed" in observations[0].content
    assert LEFT in observations[1].content and observations[2].content == LEFT
    assert instance.user.done and ("dismiss_notification", {"notification_id": "notif_1"}) in instance.user.actions
    assert "Scenario:" in user.requests[0][0].content and "notif_1" in user.requests[0][0].content
    assert outcome.solved, outcome.details
    assert outcome.breakdown["env_assertions"] == 1.0


async def test_user_mode_counts_ask_user_messages_as_communicated() -> None:
    env = TauEnvironment("retail", user=ScriptedBackend(lambda m: f"ok {STOP}"))
    task = env.task("16")
    spec = env.spec(task)
    replies = [render_hermes(a.name, dict(a.arguments)) for a in spec.actions]
    replies += [render_hermes("ask_user", {"message": f"You will get ${spec.communicate_info[0]} back."}), "Bye."]
    _, _, outcome = await run_script(env, task, replies)
    assert outcome.breakdown["communicate"] == 1.0 and outcome.solved
