"""The `tau` environment."""
