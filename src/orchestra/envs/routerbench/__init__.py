"""The `routerbench` environment."""
