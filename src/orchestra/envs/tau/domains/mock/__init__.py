"""The mock τ² domain (see tools.py)."""
