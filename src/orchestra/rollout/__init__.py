"""Rollouts: the episode loop, budgets, tool-call parsing, prompts, and running many episodes at once."""
