"""CLI commands that are faces over the library (registered in `orchestra.cli.COMMANDS`)."""
