"""Every example runs in one command on the embedded store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

EXPECT = {
    "support.py": [
        "== ticket-password: done",
        "== ticket-bounced: escalated",
        "incident loop: handoff triage>billing",
        "resolved by the lead: done",
    ],
    "procurement.py": [
        "== deal: done at version 8",
        "== stalemate: escalated",
        "incident loop: handoff negotiation>sourcing repeated 3 times",
    ],
    "research.py": ["== competitors: done", "summary  summariser", "missing: research_umbrella"],
    "review.py": [
        "== pr-clean: done; decision approve",
        "== pr-disputed: done; decision None, ruling block",
    ],
}


@pytest.mark.parametrize("script", sorted(EXPECT))
def test_example_runs_in_one_command(script: str) -> None:
    done = subprocess.run(
        [sys.executable, f"examples/{script}"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    for line in EXPECT[script]:
        assert line in done.stdout, (line, done.stdout)
