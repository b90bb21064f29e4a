"""Redis down when a command starts: every command ends with exit code 3 and one line
saying where it looked, what failed and what to do. The long-running ones (supervisor,
agent, run) first wait for it, visibly and for a bounded time (--wait-for-redis); a
supervisor started before its redis-server connects once the server is up, and works."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from blackboard.supervisor import Supervisor
from click.testing import CliRunner
from procapps import kill_app

from blackboard import BoardStore, connect
from blackboard.cli import main

HELPERS = str(Path(__file__).resolve().parents[1] / "helpers")

SHORT_COMMANDS = [
    ["boards"],
    ["show", "b1"],
    ["history", "b1"],
    ["diff", "b1", "0", "1"],
    ["watch", "b1", "--timeout", "1"],
    ["trace", "b1"],
    ["incidents"],
    ["escalations"],
    ["dlq"],
    ["stats"],
    ["agents"],
    ["approve", "b1"],
    ["reject", "b1", "--note", "no"],
    ["rollback", "b1", "--to", "0"],
    ["flag", "b1", "--reason", "wrong"],
    ["pause", "b1"],
    ["resume", "b1"],
    ["set", "b1", "k=1"],
    ["retry", "1-0"],
    ["start", "--app", "procapps:kill_app", "--board", "b1"],
]


@pytest.mark.parametrize("args", SHORT_COMMANDS, ids=lambda a: a[0])
def test_short_commands_exit_3_with_one_line(args: list[str], tmp_path: Path) -> None:
    url = f"unix://{tmp_path}/none.sock"
    result = CliRunner().invoke(main, ["--redis", url, *args])
    assert result.exit_code == 3, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: Redis unreachable"), lines[0]
    assert "No such file or directory" in lines[0] and "BLACKBOARD_REDIS_URL" in lines[0]


def run_cli(url: str, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, float]:
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "blackboard", "--redis", url, *args],
        env={**os.environ, "PYTHONPATH": HELPERS, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.returncode, done.stderr, time.monotonic() - started


LONG_COMMANDS = [
    ["supervisor", "--app", "procapps:kill_app"],
    ["agent", "slow", "--app", "procapps:kill_app"],
    ["run", "--app", "procapps:kill_app"],
]


@pytest.mark.slow
@pytest.mark.parametrize("args", LONG_COMMANDS, ids=lambda a: a[0])
def test_long_running_commands_fail_at_once_without_waiting(
    args: list[str], tmp_path: Path
) -> None:
    url = f"unix://{tmp_path}/none.sock"
    code, stderr, took = run_cli(url, *args, "--wait-for-redis", "0")
    assert code == 3, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"error: Redis unreachable at {url}"), lines[0]
    assert "--wait-for-redis" in lines[0]
    assert took < 15


@pytest.mark.slow
@pytest.mark.parametrize("args", LONG_COMMANDS, ids=lambda a: a[0])
def test_long_running_commands_wait_a_bounded_time(args: list[str]) -> None:
    with socket.socket() as s:  # a free port, where nothing listens
        s.bind(("127.0.0.1", 0))
        url = f"redis://127.0.0.1:{s.getsockname()[1]}"
    code, stderr, took = run_cli(url, *args, env={"BLACKBOARD_WAIT_FOR_REDIS": "1.5"})
    assert code == 3, stderr
    lines = stderr.splitlines()
    assert len(lines) == 2, stderr
    assert lines[0].startswith(f"waiting up to 1.5 s for Redis at {url}"), lines[0]
    assert lines[1].startswith(f"error: Redis unreachable at {url} after 1.5 s"), lines[1]
    assert f"connecting to 127.0.0.1:{url.rsplit(':', 1)[1]}" in lines[1]  # redis-py's words
    assert 1.5 <= took < 15


def spawn(url: str, log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as stderr:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "blackboard", "--redis", url, *args, "--wait-for-redis", "30"],
            env={**os.environ, "PYTHONPATH": HELPERS},
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def wait_until(check: Callable[[], Any], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not in {timeout} s"
        time.sleep(0.05)


@pytest.mark.real_redis
@pytest.mark.slow
def test_processes_started_before_redis_connect_and_work(
    redis_servers: Callable[..., Any], tmp_path: Path
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"redis://127.0.0.1:{port}"
    logs = [tmp_path / "supervisor.log", tmp_path / "agent.log"]
    procs = [
        spawn(url, logs[0], "supervisor", "--app", "procapps:kill_app"),
        spawn(url, logs[1], "agent", "slow", "--app", "procapps:kill_app"),
    ]
    try:
        for log in logs:
            wait_until(lambda log=log: "waiting up to 30 s" in log.read_text(), f"{log.name}")
        assert all(p.poll() is None for p in procs)
        redis_servers(port=port)
        for log in logs:
            wait_until(lambda log=log: "running" in log.read_text(), f"{log.name} running")

        async def board_done() -> None:
            store = BoardStore(connect(url))
            await Supervisor(kill_app, store).start("job")
            deadline = time.monotonic() + 20
            while (await store.info("job")).status != "done":
                assert time.monotonic() < deadline, "the board did not finish"
                await asyncio.sleep(0.05)
            assert (await store.read("job")).data["result"].startswith("done by ")
            await store.close()

        asyncio.run(board_done())
        assert all(p.poll() is None for p in procs)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(20)
    text = logs[0].read_text()
    assert "Traceback" not in text and "error:" not in text, text
