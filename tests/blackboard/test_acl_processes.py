"""The examples as separate processes on a real redis-server whose ``default`` user is
off, each process with its own user from ``blackboard acl --apply``: the supervisor, one
per agent, the operator's CLI. The cases end as they do embedded, no process is refused
anything it needs, and nothing is recorded as a security incident."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from aclserver import ADMIN, admin_client, lock_down

from blackboard import BoardStore
from blackboard import acl as acls

pytestmark = [pytest.mark.real_only, pytest.mark.real_redis, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
APP_SPEC = "examples.support:app"
AGENTS = ["triage", "technical", "billing", "account"]


def url(srv: Any, user: str, password: str) -> str:
    return f"unix://{user}:{password}@{srv.socket}"


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "blackboard", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


async def wait_status(store: BoardStore, board: str, want: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while await store.redis.hget(store.keys(board).meta, "status") != want:
        assert time.monotonic() < deadline, f"{board} not {want} in {timeout} s"
        await asyncio.sleep(0.05)


@contextmanager
def deployed(srv: Any, tmp_path: Path, app_spec: str, agents: list[str]) -> Iterator[Any]:
    """``blackboard acl --apply`` for the app, then its supervisor and one instance per
    agent, each as its own user; yields ``env(role)`` for CLI calls as that role. On the
    way out: every process stopped, and none of their logs mentions a refusal."""
    lock_down(srv)
    users = {"supervisor": "bb-supervisor", "operator": "bb-operator"}
    users |= {a: f"bb-agent-{a}" for a in agents}
    secrets = {
        acls.password_variable("agent" if role in agents else role, role): f"pw-{role}"  # type: ignore[arg-type]
        for role in users
    }
    base = {**os.environ, "PYTHONPATH": str(ROOT)}
    applied = run_cli(
        {**base, **secrets}, "--redis", url(srv, *ADMIN), "acl", "--app", app_spec, "--apply"
    )
    assert applied.returncode == 0, applied.stderr

    def env(role: str) -> dict[str, str]:
        return {**base, "BLACKBOARD_REDIS_URL": url(srv, users[role], f"pw-{role}")}

    logs: list[Path] = []

    def spawn(role: str, *args: str) -> subprocess.Popen[bytes]:
        log = tmp_path / f"{role}.log"
        logs.append(log)
        with log.open("wb") as err:  # (the child keeps its own copy)
            return subprocess.Popen(
                [sys.executable, "-m", "blackboard", *args, "--app", app_spec],
                env=env(role),
                stdout=subprocess.DEVNULL,
                stderr=err,
                cwd=ROOT,
            )

    procs = [spawn("supervisor", "supervisor")]
    procs += [spawn(a, "agent", a) for a in agents]
    try:
        yield env
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(20)
    for log in logs:
        text = log.read_text()
        assert "NOPERM" not in text and "no permissions" not in text, (log.name, text)


async def no_security_incident(admin: Any, store: BoardStore, boards: list[str]) -> None:
    for board in boards:
        incidents = await admin.xrange(store.keys(board).incidents)
        assert all(f["kind"] != "security" for _, f in incidents), incidents
    assert await admin.xlen("bb:dlq") == 0


async def test_the_support_example_runs_with_a_user_per_process(
    redis_servers: Any, tmp_path: Path
) -> None:
    srv = redis_servers()
    with deployed(srv, tmp_path, APP_SPEC, AGENTS) as env:
        admin = admin_client(srv)
        store = BoardStore(admin)
        try:
            for board, text in (
                ("ticket-password", "I forgot my password"),
                ("ticket-bounced", "the app crashes when I ask for a refund"),
            ):
                started = run_cli(
                    env("supervisor"),
                    "start",
                    "--app",
                    APP_SPEC,
                    "--board",
                    board,
                    "--input",
                    str(_input(tmp_path, {"ticket": {"text": text}})),
                )
                assert started.returncode == 0, started.stderr
            await wait_status(store, "ticket-password", "done")
            await wait_status(store, "ticket-bounced", "escalated")
            # The operator takes the bounced ticket, through the supervisor.
            for args in (
                ("resume", "ticket-bounced"),
                ("set", "ticket-bounced", 'resolution="lead: fixed"'),
            ):
                done = run_cli(env("operator"), *args, "--as", "lead")
                assert done.returncode == 0, done.stderr
            await wait_status(store, "ticket-bounced", "done")
            authors = [e.author for e in await store.history("ticket-password")]
            assert authors == ["triage", "account"]
            await no_security_incident(admin, store, ["ticket-password", "ticket-bounced"])
        finally:
            await store.close()


def _loan_case() -> dict[str, Any]:
    from examples.loan import CASES

    return {"application": CASES["clean"]}


def _review_case() -> dict[str, Any]:
    from examples.review import DIFFS

    return {"diff": next(iter(DIFFS.values()))}


@pytest.mark.parametrize(
    ("example", "agents", "case", "settles"),
    [
        ("loan", ["document_analysis", "clarification", "risk", "compliance"], _loan_case, "done"),
        ("procurement", None, dict, None),
        ("research", None, dict, None),
        ("review", None, _review_case, None),
    ],
)
async def test_every_other_example_runs_with_a_user_per_process(
    redis_servers: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    example: str,
    agents: list[str] | None,
    case: Any,
    settles: str | None,
) -> None:
    """Each example's first case, as processes with a user each, ends as it does
    embedded (``settles``; None: whatever the embedded run of the case ends in)."""
    import importlib

    from blackboard.supervisor.embedded import Deployment

    monkeypatch.syspath_prepend(str(ROOT))  # (the examples are not installed)
    module = importlib.import_module(f"examples.{example}")
    names = agents or module.app.agent_names
    initial = case()
    if settles is None:  # what the case ends in, embedded
        settled = await asyncio.wait_for(
            asyncio.to_thread(
                Deployment.run_sync, module.app, "embedded", initial, raise_on_escalation=False
            ),
            60,
        )
        settles = str(settled.info.status)
    srv = redis_servers()
    spec = f"examples.{example}:app"
    with deployed(srv, tmp_path, spec, list(names)) as env:
        admin = admin_client(srv)
        store = BoardStore(admin)
        try:
            args = ["start", "--app", spec, "--board", "case-1"]
            started = run_cli(env("supervisor"), *args, "--input", str(_input(tmp_path, initial)))
            assert started.returncode == 0, started.stderr
            await wait_status(store, "case-1", settles)
            await no_security_incident(admin, store, ["case-1"])
        finally:
            await store.close()


def _input(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / f"input-{abs(hash(json.dumps(data, sort_keys=True)))}.json"
    path.write_text(json.dumps(data))
    return path
