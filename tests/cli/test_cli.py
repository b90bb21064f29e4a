"""The CLI, in-process (click's runner) and as a subprocess, against a real redis-server
holding the loan example's boards; `watch` in a real terminal (tmux)."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from blackboard.supervisor import Deployment
from click.testing import CliRunner

from blackboard import BoardStore, Proposal, connect
from blackboard.cli import main

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from examples import loan  # noqa: E402

pytestmark = [pytest.mark.real_redis]


@pytest.fixture
def boards(redis_server: Any) -> str:
    """The four loan cases, the AML one left waiting for a human."""

    async def setup() -> None:
        store = BoardStore(connect(redis_server.url))
        await store.redis.flushdb()
        async with Deployment(loan.app, store) as d:
            for case in ("clean", "bad-tax-id", "income-slip"):
                await loan.run_case(d, case)
            await d.start("loan-aml-hit", {"application": loan.CASES["aml-hit"]})
            await d.settle("loan-aml-hit")
        await store.close()

    asyncio.run(setup())
    return str(redis_server.url)


def cli(url: str | None, *args: str) -> Any:
    base = ["--redis", url] if url else []
    return CliRunner().invoke(main, [*base, *args], catch_exceptions=False)


def test_inspect_commands_json(boards: str) -> None:
    listed = json.loads(cli(boards, "boards", "--json").output)
    assert {b["board_id"]: b["status"] for b in listed} == {
        "loan-clean": "done",
        "loan-bad-tax-id": "done",
        "loan-income-slip": "done",
        "loan-aml-hit": "awaiting_approval",
    }
    shown = json.loads(cli(boards, "show", "loan-clean", "--json").output)
    assert shown["data"]["decision"] == "approve" and shown["version"] == 3
    at1 = json.loads(
        cli(boards, "show", "loan-clean", "--at", "1", "--key", "tax_id", "--json").output
    )
    assert at1 == {"board": "loan-clean", "version": 1, "data": {"tax_id": "12-3456789"}}
    history = json.loads(cli(boards, "history", "loan-income-slip", "--json").output)
    assert [h["kind"] for h in history][:2] == ["write", "rollback"]
    patch = json.loads(cli(boards, "diff", "loan-clean", "2", "3", "--json").output)
    assert {op["path"] for op in patch} == {"/aml_flag", "/decision"}
    trace = json.loads(cli(boards, "trace", "loan-bad-tax-id", "--json").output)
    assert [h["agent"] for h in trace["hops"]][:3] == [
        "document_analysis",
        "clarification",
        "document_analysis",
    ]
    assert all(h["commit"] for h in trace["hops"])
    incidents = json.loads(cli(boards, "incidents", "--json").output)
    assert [(i["board"], i["kind"]) for i in incidents] == [("loan-income-slip", "rollback")]
    waiting = json.loads(cli(boards, "escalations", "--json").output)
    assert [(w["board"], w["status"]) for w in waiting] == [("loan-aml-hit", "awaiting_approval")]
    assert waiting[0]["held"][0]["author"] == "compliance"
    stats = {s["board"]: s for s in json.loads(cli(boards, "stats", "--json").output)}
    assert stats["loan-income-slip"]["rewrites"] == 1
    assert stats["loan-clean"]["handoff_success_rate"] == 1.0
    agents = json.loads(cli(boards, "agents", "--json").output)
    assert {a["agent"] for a in agents["agents"]} == {
        "document_analysis",
        "clarification",
        "risk",
        "compliance",
    }
    assert json.loads(cli(boards, "dlq", "--json").output) == []


def test_tables_fit_80_columns(boards: str) -> None:
    for args in (
        ["boards"],
        ["history", "loan-clean"],
        ["trace", "loan-clean"],
        ["stats"],
        ["escalations"],
        ["incidents"],
    ):
        out = CliRunner().invoke(main, ["--redis", boards, *args], terminal_width=80).output
        assert max(len(line) for line in out.splitlines()) <= 80, (args, out)


def test_mermaid(boards: str, tmp_path: Path) -> None:
    target = tmp_path / "flow.mmd"
    cli(boards, "trace", "loan-clean", "--mermaid", str(target))
    text = target.read_text()
    assert text.startswith("flowchart LR")
    assert "document_analysis -->|trigger| risk" in text
    assert "risk -->|handoff| compliance" in text


def test_errors_and_exit_codes(boards: str, tmp_path: Path) -> None:
    unknown = CliRunner().invoke(main, ["--redis", boards, "show", "loan-clen"])
    assert unknown.exit_code == 1
    assert "does not exist. Did you mean 'loan-clean'" in unknown.output
    assert "Traceback" not in unknown.output
    no_redis = CliRunner().invoke(main, ["boards"], env={"BLACKBOARD_REDIS_URL": ""})
    assert no_redis.exit_code == 2 and "pass --redis URL" in no_redis.output
    down = CliRunner().invoke(main, ["--redis", f"unix://{tmp_path}/none.sock", "boards"])
    assert down.exit_code == 3 and "Redis unreachable" in down.output
    usage = CliRunner().invoke(main, ["--redis", boards, "rollback", "loan-clean"])
    assert usage.exit_code == 2 and "exactly one of --to" in usage.output


def _env(url: str) -> dict[str, str]:
    return {**os.environ, "BLACKBOARD_REDIS_URL": url, "PYTHONPATH": str(ROOT)}


@pytest.mark.slow
def test_operator_commands_through_a_supervisor_process(boards: str) -> None:
    env = _env(boards)
    sup = subprocess.Popen(
        [sys.executable, "-m", "blackboard", "supervisor", "--app", "examples.loan:app"],
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        approve = subprocess.run(
            [
                sys.executable,
                "-m",
                "blackboard",
                "approve",
                "loan-aml-hit",
                "--note",
                "reviewed",
                "--as",
                "officer",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert approve.returncode == 0, approve.stderr
        assert "approve loan-aml-hit: committed (version 3)" in approve.stdout
        rollback = subprocess.run(
            [
                sys.executable,
                "-m",
                "blackboard",
                "rollback",
                "loan-clean",
                "--to",
                "1",
                "--reason",
                "recheck",
                "--as",
                "officer",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert rollback.returncode == 0, rollback.stderr
        shown = json.loads(
            subprocess.run(
                [sys.executable, "-m", "blackboard", "history", "loan-clean", "--json"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout
        )
        assert (shown[-1]["kind"], shown[-1]["author"], shown[-1]["reason"]) == (
            "rollback",
            "human:officer",
            "recheck",
        )
        refused = subprocess.run(
            [sys.executable, "-m", "blackboard", "approve", "loan-clean"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert refused.returncode == 1 and "holds no proposal" in refused.stderr
    finally:
        sup.send_signal(signal.SIGTERM)
        sup.wait(30)


def test_run_an_app_in_one_process(tmp_path: Path) -> None:
    app_input = tmp_path / "case.json"
    app_input.write_text(json.dumps({"application": loan.CASES["bad-tax-id"]}))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "blackboard",
            "run",
            "--app",
            "examples.loan:app",
            "--input",
            str(app_input),
            "--board",
            "x1",
            "--json",
        ],
        env={**_env(""), "BLACKBOARD_REDIS_URL": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["status"], result["data"]["tax_id"]) == ("done", "98-7654321")
    assert [c["author"] for c in result["commits"]][:2] == ["document_analysis", "clarification"]


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_watch_in_a_real_terminal(boards: str) -> None:
    session = f"bbwatch{os.getpid()}"
    command = (
        f"BLACKBOARD_REDIS_URL={boards} {sys.executable} -m blackboard watch "
        "loan-aml-hit --timeout 20"
    )
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "100", "-y", "20", command], check=True
    )
    try:

        def screen() -> str:
            return subprocess.run(
                ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True
            ).stdout

        deadline = time.monotonic() + 20
        while "watching loan-aml-hit" not in screen():
            assert time.monotonic() < deadline, screen()
            time.sleep(0.05)

        async def commit() -> None:
            store = BoardStore(connect(boards))
            store.register(loan.app.schema)
            version = await store.version("loan-aml-hit")
            await store.commit(
                "loan-aml-hit",
                Proposal.updates(
                    "human", version, {"application": {**loan.CASES["aml-hit"], "note": "x"}}
                ),
            )
            await store.close()

        asyncio.run(commit())
        while "write     human" not in screen():
            assert time.monotonic() < deadline, screen()
            time.sleep(0.05)
        assert "application" in screen()
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], check=False)


def test_demo_prints_a_live_timeline() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "blackboard", "demo", "--fast"],
        env={**_env(""), "BLACKBOARD_REDIS_URL": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    out = done.stdout
    assert out.count("loan-clean         v") == 3  # commits
    assert "loan-bad-tax-id    v2  write     clarification" in out  # a trigger
    assert "held at the gate" in out and "v3  approval  human:officer" in out
    assert "loan-income-slip   v2  rollback  supervisor" in out  # the audit rollback
    assert "incident rollback: audit 'income_consistency' failed" in out
    assert "negotiation asked to rewrite: agreed price is above max_budget" in out
    assert "reader asked to rewrite: value of key 'amount' fails its type" in out
    assert "incident loop: handoff negotiation>sourcing repeated 3 times" in out
    assert "== stalemate: escalated" in out and out.count(": done at version") == 6


@pytest.mark.slow
def test_loan_example_as_separate_processes(redis_server: Any, tmp_path: Path) -> None:
    with redis_server.client() as c:
        c.flushdb()
    env = _env(redis_server.url)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "blackboard", "supervisor", "--app", "examples.loan:app"],
            env=env,
            stderr=subprocess.DEVNULL,
        )
    ]
    procs += [
        subprocess.Popen(
            [sys.executable, "-m", "blackboard", "agent", name, "--app", "examples.loan:app"],
            env=env,
            stderr=subprocess.DEVNULL,
        )
        for name in ("document_analysis", "clarification", "risk", "compliance")
    ]
    try:
        case = tmp_path / "case.json"
        case.write_text(json.dumps({"application": loan.CASES["income-slip"]}))
        started = subprocess.run(
            [
                sys.executable,
                "-m",
                "blackboard",
                "start",
                "--app",
                "examples.loan:app",
                "--board",
                "loan-1",
                "--input",
                str(case),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert started.returncode == 0, started.stderr
        watched = subprocess.run(
            [
                sys.executable,
                "-m",
                "blackboard",
                "watch",
                "loan-1",
                "--until-done",
                "--timeout",
                "60",
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert "board loan-1 is done" in watched.stdout
        history = json.loads(
            subprocess.run(
                [sys.executable, "-m", "blackboard", "history", "loan-1", "--json"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout
        )
        assert [(h["kind"], h["author"]) for h in history] == [
            ("write", "document_analysis"),
            ("rollback", "supervisor"),
            ("write", "document_analysis"),
            ("write", "risk"),
            ("write", "compliance"),
        ]
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(30)


def test_dead_letter_listed_and_retried(boards: str) -> None:
    async def dead_letter() -> None:
        from blackboard.keys import GlobalKeys
        from blackboard.queues import Delivery, WorkQueue

        client = connect(boards)
        keys = GlobalKeys("bb")
        queue = WorkQueue(client, keys.commands(0), "supervisor", dead_letters=keys.dead_letters)
        await queue.ensure_group()
        entry = await queue.put({"s": "not json"})
        await queue.dead_letter(Delivery(entry, {"s": "not json"}, 6), "not a valid submission")
        await client.aclose()

    asyncio.run(dead_letter())
    [letter] = json.loads(cli(boards, "dlq", "--json").output)
    assert (letter["dl_reason"], letter["s"]) == ("not a valid submission", "not json")
    retried = cli(boards, "retry", letter["id"])
    assert retried.exit_code == 0 and "retried" in retried.output
    assert json.loads(cli(boards, "dlq", "--json").output) == []

    async def requeued() -> list[Any]:
        client = connect(boards)
        rows = await client.xrange("bb:ops:0")
        await client.aclose()
        return rows

    assert [f for _, f in asyncio.run(requeued())][-1] == {"s": "not json"}
    for entry_id in ("1-1", "nope"):
        missing = CliRunner().invoke(main, ["--redis", boards, "retry", entry_id])
        assert missing.exit_code == 2 and f"no dead letter {entry_id!r}" in missing.output


def test_bad_app_specs_and_arguments_are_usage_errors(boards: str) -> None:
    cases = [
        (["supervisor", "--app", "no_colon"], "expected 'pkg.module:attribute'"),
        (["supervisor", "--app", "no_such_module:app"], "cannot import 'no_such_module'"),
        (["agent", "risk", "--app", "examples.loan:CASES"], "is dict, not a blackboard App"),
        (["set", "loan-clean", "verdict"], "'verdict' is not KEY=JSON"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(main, ["--redis", boards, *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output


def test_start_on_an_existing_board_fails_cleanly(boards: str) -> None:
    result = CliRunner().invoke(
        main, ["--redis", boards, "start", "--app", "examples.loan:app", "--board", "loan-clean"]
    )
    assert result.exit_code == 1
    assert "board 'loan-clean' already exists" in result.output
    assert json.loads(cli(boards, "show", "loan-clean", "--json").output)["version"] == 3


def test_the_supervisor_process_freezes_what_it_loaded_and_collects_less_often(
    redis_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`blackboard supervisor` sets its startup objects aside for the garbage collector
    and raises the young generation's threshold before it runs (the batch path
    allocates in bursts); the app is published first."""
    from blackboard.supervisor import Supervisor

    from blackboard.cli.run import GC_THRESHOLD

    seen: list[tuple[int, int]] = []

    async def run(self: Supervisor, stop: Any = None, **_: Any) -> None:
        seen.append((gc.get_threshold()[0], gc.get_freeze_count()))

    before = gc.get_threshold()
    monkeypatch.setattr(Supervisor, "run", run)
    try:
        result = cli(str(redis_server.url), "supervisor", "--app", "examples.loan:app")
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
    assert result.exit_code == 0, result.output
    [(threshold, frozen)] = seen
    assert threshold == GC_THRESHOLD and frozen > 0


def test_output_to_a_closed_pipe_ends_quietly(boards: str) -> None:
    """`blackboard show B | head -1`: the reader went away, which is no error."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # gone before anything is written: every write fails
    try:
        shown = subprocess.run(
            [sys.executable, "-m", "blackboard", "--redis", boards, "show", "loan-clean"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert (shown.returncode, shown.stderr) == (0, "")


def test_watch_refuses_a_negative_timeout(boards: str) -> None:
    refused = CliRunner().invoke(
        main, ["--redis", boards, "watch", "loan-clean", "--timeout", "-1"]
    )
    assert refused.exit_code == 2
    assert "-1" in refused.output and ">=0" in refused.output.replace(" ", "")


@pytest.mark.parametrize("columns", [60, 80])
def test_trace_never_breaks_inside_a_name(boards: str, columns: int) -> None:
    """An agent's name and an outcome are identifiers: in a narrow table they wrap
    between words only, a word too long for the column ellipsised (each is whole in
    --json and in the lines below the table); never folded into pieces."""
    hops = json.loads(cli(boards, "trace", "loan-income-slip", "--json").output)["hops"]
    result = CliRunner().invoke(
        main, ["--redis", boards, "trace", "loan-income-slip"], env={"COLUMNS": str(columns)}
    )
    assert max(len(line) for line in result.output.splitlines()) <= columns
    rows = [line.split("│") for line in result.output.splitlines() if line.startswith("│")]
    for column, field in ((2, "agent"), (4, "outcome")):
        words = {w for hop in hops for w in hop[field].split()}
        shown = [cells[column].strip() for cells in rows if cells[column].strip()]
        for piece in shown:  # a whole word, or the start of one and "…"
            assert piece in words or (
                piece.endswith("…") and any(w.startswith(piece[:-1]) for w in words)
            ), (field, piece, result.output)
    agents = [cells[2].strip() for cells in rows if cells[2].strip()]
    assert len(agents) == len(hops)  # a name is one line
    assert "document_analysis audit failed:income_consistency:" in result.output
