"""`watch` in a real terminal (tmux), driven through a gate's approval to done and
through rejections to an escalation, as an operator sees it: the terminal's own width,
the reasons, what to do, the exit codes. Skipped without tmux (`apt-get install
tmux`; .ci/run installs it)."""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import whyapp
from blackboard.supervisor import Deployment

from blackboard import BoardStore, connect

ROOT = Path(__file__).resolve().parents[2]
WIDTH = 120
pytestmark = [
    pytest.mark.real_redis,
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("tmux") is None,
        reason="tmux is not installed: `apt-get install tmux` to run the terminal test",
    ),
]


@pytest.fixture
async def terminal(redis_server: Any) -> AsyncIterator[str]:
    """A detached tmux session of WIDTH columns running a shell with the deployment's
    environment; killed afterwards."""
    session = f"bbwatch{os.getpid()}"
    helpers = os.pathsep.join([str(ROOT / "tests" / "helpers"), str(ROOT)])
    shell = (
        f"env BLACKBOARD_REDIS_URL={shlex.quote(redis_server.url)} "
        f"PYTHONPATH={shlex.quote(helpers)} PS1='$ ' bash --norc --noprofile"
    )
    await tmux("new-session", "-d", "-s", session, "-x", str(WIDTH), "-y", "50", shell)
    try:
        yield session
    finally:
        await tmux("kill-session", "-t", session)


async def tmux(*args: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        "tmux", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, _ = await proc.communicate()
    return out.decode()


async def screen(session: str) -> str:
    """What the terminal shows, its wrapped lines joined (-J)."""
    return await tmux("capture-pane", "-p", "-J", "-S", "-200", "-t", session)


async def shows(session: str, *texts: str, seconds: float = 30) -> str:
    """Wait until the terminal shows every one of ``texts``."""
    deadline = time.monotonic() + seconds
    while True:
        text = await screen(session)
        if all(t in text for t in texts):
            return text
        assert time.monotonic() < deadline, f"never showed {texts}:\n{text}"
        await asyncio.sleep(0.05)


def squeeze(text: str) -> str:
    """Without whitespace: watch wraps long texts to the terminal's width."""
    return "".join(text.split())


def watch(board: str) -> str:
    return f"{sys.executable} -m blackboard watch {board} --until-done; echo exit=$?"


async def test_watch_through_approve_escalate_and_done(redis_server: Any, terminal: str) -> None:
    store = BoardStore(connect(redis_server.url))
    await store.redis.flushdb()
    try:
        async with Deployment(whyapp.app, store) as d:
            # a gate holds the board; the terminal says why and how to approve; approved, done
            await d.start("gate", {"brief": {"case": "gate"}})
            await d.settle("gate")
            await tmux("send-keys", "-t", terminal, watch("gate"), "Enter")
            text = await shows(terminal, "`blackboard reject gate --note WHY`")
            assert "watching gate (awaiting_approval, v2)" in text
            assert squeeze(whyapp.GATE_MESSAGE) in squeeze(text)
            assert "approve it with `blackboard approve gate`" in text
            await d.command("gate", "approve", by="human:officer")
            text = await shows(terminal, "exit=0")
            assert "approval  human:officer" in text and "board gate is done" in text
            # watching a board before it exists; its rejections; escalated, exit 4
            await tmux("send-keys", "-t", terminal, watch("stubborn"), "Enter")
            await shows(terminal, "waiting for board stubborn to be created")
            await d.start("stubborn", {"brief": {"case": "stubborn"}})
            text = await shows(terminal, f"exit={4}")
        assert text.count("writer finished") == 3
        assert squeeze(text).count(squeeze("Input should be greater than or equal to 0")) >= 3
        assert "board stubborn is escalated (v0)" in text and "watching stubborn" not in text
        assert squeeze("rewrites: agent writer was rejected 3 times in a row") in squeeze(text)
        assert max(len(line) for line in text.splitlines()) <= WIDTH
    finally:
        await store.close()
