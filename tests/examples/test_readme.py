"""README's code examples run as written (they are the first thing a newcomer copies)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from llmstub import LLMStub, openai_text

README = Path(__file__).resolve().parents[2] / "README.md"


def blocks() -> list[str]:
    found = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(found) == 4
    return found


def test_readme_python_examples_run(tmp_path: Path) -> None:
    board_api, agents, _, _ = blocks()
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


def test_readme_sync_example_runs_outside_asyncio(tmp_path: Path) -> None:
    board_api, agents, sync, _ = blocks()
    script = tmp_path / "readme_sync.py"
    script.write_text(board_api + "\n" + agents + "\n" + sync)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "done low"


def test_readme_real_model_example_runs_on_the_openai_adapter(
    tmp_path: Path, llm_stub: LLMStub
) -> None:
    """As written, with the SDK pointed at the scripted server by its own variable."""
    board_api, agents, _, real = blocks()
    answer = {"team": "billing", "summary": "Charged twice this month."}
    llm_stub.script(openai_text(json.dumps(answer)))
    script = tmp_path / "readme_real.py"
    script.write_text(board_api + "\n" + agents + "\n" + real + "\nasyncio.run(triage_one())\n")
    env = {**os.environ, "OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": llm_stub.openai_url}
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "done billing"
    [sent] = llm_stub.bodies()
    assert sent["model"] == "gpt-4o-mini"
    schema = sent["response_format"]["json_schema"]["schema"]
    assert set(schema["properties"]) == {"team", "summary"}
    assert "charged twice" in sent["messages"][1]["content"]
