"""Examples take ``--model SPEC``: the loan example runs through the real OpenAI adapter
against the scripted server (answering as the offline model would) with the same
outcome, and a bad spec is refused with the ConfigError's message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from llmstub import LLMStub, Recorded, Turn, openai_text

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from examples import loan

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    return subprocess.run(
        [sys.executable, "examples/loan.py", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )


@pytest.mark.slow
def test_the_loan_example_runs_on_a_real_adapter(llm_stub: LLMStub) -> None:
    def extract(request: Recorded) -> Turn:
        return openai_text(loan.extractor(request.json["messages"]), tokens=(50, 20))

    llm_stub.responder = extract
    done = run("--model", f"openai-compatible:gpt-4o-mini@{llm_stub.openai_url}")
    assert done.returncode == 0, done.stderr
    for case in ("clean: done", "bad-tax-id: done", "aml-hit: done", "income-slip: done"):
        assert f"== {case}" in done.stdout, done.stdout
    bodies = llm_stub.bodies()
    assert len(bodies) >= 6  # every extraction went through the adapter
    assert {b["model"] for b in bodies} == {"gpt-4o-mini"}
    assert bodies[0]["response_format"]["json_schema"]["name"] == "Extraction"


def test_a_bad_model_spec_is_refused_with_its_reason() -> None:
    done = run("--model", "openai:gpt-4o-mini")
    assert done.returncode == 2
    assert "OPENAI_API_KEY is not set" in done.stderr
    assert "Traceback" not in done.stderr
