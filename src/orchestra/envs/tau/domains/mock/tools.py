"""Mock domain: a tiny task tracker (users and their tasks) with a user-side notification inbox; used by tests.

Tables: `tasks` and `users` (db.json), `notifications` (user_db.json, the user's side). Policy (policy.md): every task
has a title, a status is "pending" or "completed", only existing users get tasks, tasks are never deleted.
New task ids are `task_<n>` with n one more than the number of tasks, so replays are deterministic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from orchestra.envs.tau.domains import Db, Domain, Tables, ToolError, read_data_file

STATUSES = ("pending", "completed")


def load(folder: Path) -> Tables:
    data = read_data_file(folder, "db")
    if data is None:
        raise ToolError(f"no db.json or db.toml in {folder}")
    user = read_data_file(folder, "user_db") or {}
    return {"tasks": data.get("tasks", {}), "users": data.get("users", {}),
            "notifications": user.get("notifications", {})}


def get_user(db: Db, user_id: str) -> dict[str, Any]:
    """Get a user and the ids of their tasks.

    Args:
        user_id: The user id, e.g. "user_1".
    """
    return db.get("users", user_id, "user")


def get_task(db: Db, task_id: str) -> dict[str, Any]:
    """Get a task by id.

    Args:
        task_id: The task id, e.g. "task_1".
    """
    return db.get("tasks", task_id, "task")


def transfer_to_human_agents(db: Db, summary: str) -> str:
    """Transfer the user to a human agent, with a summary of the request. For requests the tools cannot handle.

    Args:
        summary: A summary of the user's request.
    """
    return "Transfer successful"


def create_task(db: Db, user_id: str, title: str, description: str | None = None) -> dict[str, Any]:
    """Create a pending task for an existing user.

    Args:
        user_id: The user who owns the task, e.g. "user_1".
        title: The task's title (required, not empty).
        description: An optional description.
    """
    db.get("users", user_id, "user")
    if not title.strip():
        raise ToolError("a task must have a title")
    task_id = f"task_{len(db.table('tasks')) + 1}"
    task = db.insert("tasks", task_id, {"task_id": task_id, "title": title, "description": description,
                                        "status": "pending"})
    db.write("users", user_id)["tasks"].append(task_id)
    return task


def update_task_status(db: Db, task_id: str, status: str) -> dict[str, Any]:
    """Set a task's status.

    Args:
        task_id: The task id, e.g. "task_1".
        status: "pending" or "completed".
    """
    if status not in STATUSES:
        raise ToolError(f"status must be one of {list(STATUSES)}")
    task = db.write("tasks", task_id, "task")
    task["status"] = status
    return task


def check_notifications(db: Db) -> list[dict[str, Any]]:
    """List the notifications in the user's inbox."""
    return list(db.table("notifications").values())


def dismiss_notification(db: Db, notification_id: str) -> str:
    """Dismiss a notification (marks it read).

    Args:
        notification_id: The notification id, e.g. "notif_1".
    """
    db.write("notifications", notification_id, "notification")["status"] = "read"
    return f"Notification {notification_id} dismissed"


def add_notification(db: Db, notification_id: str, message: str, task_id: str) -> None:
    """Setup: put a notification in the user's inbox (replacing one with the same id)."""
    record = {"notification_id": notification_id, "message": message, "status": "unread", "task_id": task_id}
    if db.find("notifications", notification_id) is None:
        db.insert("notifications", notification_id, record)
    else:
        db.write("notifications", notification_id).update(record)


def assert_task_status(db: Db, task_id: str, expected_status: str) -> bool:
    task = db.find("tasks", task_id)
    return task is not None and task["status"] == expected_status


def assert_notification_status(db: Db, notification_id: str, expected_status: str) -> bool:
    notification = db.find("notifications", notification_id)
    return notification is not None and notification["status"] == expected_status


DOMAIN = Domain(
    name="mock",
    load=load,
    read_tools=(get_user, get_task, transfer_to_human_agents),
    write_tools=(create_task, update_task_status),
    user_read_tools=(check_notifications,),
    user_write_tools=(dismiss_notification,),
    setup=(add_notification,),
    assertions=(assert_task_status, assert_notification_status),
    user_tables=frozenset({"notifications"}),
    solo_note="The notification tools act on the user's own inbox; no user is present, so you operate them yourself.",
)
