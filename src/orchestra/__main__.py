"""`python -m orchestra ...`: the same command line as the `orchestra` script.

This is what `accelerate launch -m orchestra train sft|grpo --config ...` runs in each process.
"""

from orchestra.cli import app

if __name__ == "__main__":
    app(prog_name="orchestra")
