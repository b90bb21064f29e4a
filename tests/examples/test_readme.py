"""README's code examples run as written (they are the first thing a newcomer copies)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_python_examples_run(tmp_path: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) == 2
    board_api, agents = blocks
    script = tmp_path / "readme.py"
    # The agents example reuses LoanBoard from the board example.
    script.write_text(board_api + "\n" + agents + "\nasyncio.run(main())\n")
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert any(line.startswith("3 rollback human:alice") for line in lines), lines
    assert "status='done' version=2" in lines[-1]
