"""orchestra: train and run small orchestrator models that call tools and other models under cost budgets.

The public surface is small; importing it never imports torch.
"""

from orchestra.backends.base import ChatBackend, Sampling
from orchestra.backends.pricing import PriceTable
from orchestra.backends.scripted import ScriptedBackend
from orchestra.errors import BackendError, BudgetExceeded, ConfigError
from orchestra.preferences import Limits, Preferences
from orchestra.rollout.budget import Budget
from orchestra.rollout.episode import run_episode
from orchestra.task import Environment, Instance, Task
from orchestra.tools import CostCard, Tool, Toolbox, ToolOutput, ToolSpec, tool
from orchestra.types import (
    Completion,
    Message,
    Observation,
    Outcome,
    Termination,
    ToolCall,
    Trajectory,
    Turn,
    Usage,
)

__version__ = "0.1.0"

__all__ = [
    "BackendError", "Budget", "BudgetExceeded", "ChatBackend", "Completion", "ConfigError", "CostCard",
    "Environment", "Instance", "Limits", "Message", "Observation", "Outcome", "Preferences", "PriceTable",
    "Sampling", "ScriptedBackend", "Task", "Termination", "Tool", "ToolCall", "ToolOutput", "ToolSpec", "Toolbox",
    "Trajectory", "Turn", "Usage", "run_episode", "tool",
]
