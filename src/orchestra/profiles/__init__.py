"""Prompt profiles: the prompts and tool descriptions a released orchestrator was trained with, so it runs as is."""
