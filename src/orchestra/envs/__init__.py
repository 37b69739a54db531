"""Environments: tasks, their tools, and verifiable grading."""

from orchestra.envs.base import Environment, Instance, Outcome

__all__ = ["Environment", "Instance", "Outcome"]
