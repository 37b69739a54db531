"""Scale-out entry points: `python -m orchestra` (what `accelerate launch -m orchestra` runs in each process)."""

from __future__ import annotations

import subprocess
import sys


def test_python_dash_m_orchestra_lists_the_commands_and_fails_like_the_script():
    shown = subprocess.run([sys.executable, "-m", "orchestra", "--help"], capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    for command in ("train", "eval", "run", "serve", "demo"):
        assert f" {command} " in shown.stdout
    assert "Usage: orchestra" in shown.stdout  # the program is named as the script names it, not __main__.py

    train = subprocess.run([sys.executable, "-m", "orchestra", "train", "--help"], capture_output=True, text=True,
                           timeout=60)
    assert train.returncode == 0 and " sft " in train.stdout and " grpo " in train.stdout

    bad = subprocess.run([sys.executable, "-m", "orchestra", "no-such-command"], capture_output=True, text=True,
                         timeout=60)
    assert bad.returncode == 2 and "no-such-command" in bad.stderr and "Traceback" not in bad.stderr
