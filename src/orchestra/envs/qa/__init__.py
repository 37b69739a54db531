"""The `qa` environment."""
