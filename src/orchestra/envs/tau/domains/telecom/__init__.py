"""The telecom τ² domain (see tools.py)."""
