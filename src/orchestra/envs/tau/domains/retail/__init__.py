"""The retail τ² domain (see tools.py)."""
