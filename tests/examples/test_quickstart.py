"""examples/quickstart.py runs in one command, embedded and against a real server, and
every mechanism it shows really happened."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "quickstart.py"


def run_example(url: str | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "BLACKBOARD_REDIS_URL"}
    if url:
        env["BLACKBOARD_REDIS_URL"] = url
    done = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.splitlines()


def check(lines: list[str]) -> None:
    assert lines[0] == "created board loan-42 at version 0"
    assert lines[1] == "v1  document_analysis wrote loan_amount, verified_income"
    assert lines[2].startswith(
        "refused  ConflictError: board 'loan-42' changed after base "
        "version 0: 'verified_income' at v1."
    )
    assert lines[3] == "v2  risk wrote credit_score, risk_rating"
    assert lines[4].startswith(
        "refused  OwnershipError: author 'risk' may not write key 'loan_amount'"
    )
    assert lines[5].startswith("refused  ValidationFailed: value of key 'credit_score'")
    assert (
        lines[7] == "v4  rollback to v1 by human:alice (restored credit_score, notes, risk_rating)"
    )
    history = [line.split()[:3] for line in lines if line.startswith("  v")]
    assert history == [
        ["v1", "write", "document_analysis"],
        ["v2", "write", "risk"],
        ["v3", "write", "risk"],
        ["v4", "rollback", "human:alice"],
    ]
    assert (
        "board now: {'loan_amount': 250000.0, 'verified_income': 96000.0, "
        "'credit_score': None, 'risk_rating': None, 'notes': []}"
    ) in lines
    assert lines[-1] == "size: 25 bytes, ~7 tokens"


def test_quickstart_embedded() -> None:
    check(run_example(None))


@pytest.mark.real_redis
def test_quickstart_on_real_redis(redis_server: Any) -> None:
    with redis_server.client() as client:
        client.flushdb()
    check(run_example(redis_server.url))
