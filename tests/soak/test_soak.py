"""The soak: the five examples as OS processes (two ``blackboard supervisor`` replicas
and two ``blackboard agent`` instances of every agent, per example) on a real
redis-server, with bursts of boards and kill -9 every few seconds, half of the kills
aimed at a process holding unacknowledged work (a consumer with pending entries, found
with XPENDING). A killed process is replaced at once under a new name.

It ends with every board settled as its example intends (done; the loan's AML hit held
at its gate; the bounced support ticket escalated by the loop breaker), no proposal
committed twice, and every board equal to the replay of its log; it prints its figures.

Not in the default run (marker ``soak``). Run it with::

    BLACKBOARD_SOAK_S=60 .venv/bin/pytest -m soak -s tests/soak   # short: 60 s
    .venv/bin/pytest -m soak -s tests/soak                         # 10 minutes

``BLACKBOARD_SOAK_S``: seconds of load and kills (default 600);
``BLACKBOARD_SOAK_KILL_S``: seconds between kills (default 3).
"""

from __future__ import annotations

import asyncio
import copy
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from blackboard.supervisor import Supervisor
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from blackboard import BoardStore, Settings, connect
from blackboard.history import replay
from blackboard.keys import GlobalKeys

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # soakapps imports examples
from soakapps import APPS, INPUTS, intended

pytestmark = [pytest.mark.soak, pytest.mark.real_redis, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
HELPERS = str(ROOT / "tests" / "helpers")
DURATION_S = float(os.environ.get("BLACKBOARD_SOAK_S", "600"))
KILL_EVERY_S = float(os.environ.get("BLACKBOARD_SOAK_KILL_S", "3"))
BURST_EVERY_S = 4.0
SETTLE_S = 150.0
"""After the load: time for every board to settle (beyond the 30 s activation timeouts
that anything lost would trip)."""
STOPPED = ("done", "escalated", "awaiting_approval", "failed")


@dataclass
class Role:
    """One process slot: an example's supervisor replica or agent instance."""

    example: str
    agent: str  # "" for a supervisor replica
    slot: int
    generation: int = 0
    process: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        what = self.agent or "sup"
        return f"{self.example}.{what}.{self.slot}.g{self.generation}"


@dataclass
class Soak:
    url: str
    logs: str
    roles: list[Role] = field(default_factory=list)
    kills: int = 0
    aimed: int = 0
    boards: list[tuple[str, str, str]] = field(default_factory=list)
    """(example, case, board id)"""

    def spawn(self, role: Role) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT), HELPERS]),
            "BLACKBOARD_REDIS_URL": self.url,
            "BLACKBOARD_KEY_PREFIX": role.example,
        }
        args = ["supervisor"] if not role.agent else ["agent", role.agent]
        app = f"soakapps:APPS_{role.example}"
        with open(os.path.join(self.logs, f"{role.name}.log"), "wb") as out:
            role.process = subprocess.Popen(
                [sys.executable, "-m", "blackboard", *args, "--app", app, "--name", role.name],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def by_name(self) -> dict[str, Role]:
        return {r.name: r for r in self.roles}

    def kill(self, role: Role) -> None:
        assert role.process is not None
        role.process.send_signal(signal.SIGKILL)
        role.process.wait()
        self.kills += 1
        role.generation += 1  # a restarted process has a new consumer name
        self.spawn(role)

    def stop(self) -> None:
        for role in self.roles:
            if role.process is not None and role.process.poll() is None:
                role.process.send_signal(signal.SIGTERM)
        for role in self.roles:
            if role.process is None:
                continue
            try:
                role.process.wait(20)
            except subprocess.TimeoutExpired:
                role.process.kill()
                role.process.wait()


async def holders(client: Redis) -> list[str]:
    """Consumer names holding unacknowledged entries, on every queue of every example."""
    names: list[str] = []
    for example, app in APPS.items():
        keys = GlobalKeys(example)
        streams = [(keys.submissions(a.name, 0), "supervisor") for a in app.agents]
        streams += [(keys.commands(0), "supervisor")]
        streams += [(keys.queue(a.name), "workers") for a in app.agents]
        for stream, group in streams:
            try:
                info = await client.xpending(stream, group)
            except ResponseError:  # no group yet
                continue
            names += [str(c["name"]) for c in info["consumers"] if int(c["pending"]) > 0]
    return names


async def wait_until(check: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


async def test_soak_of_the_examples_under_aimed_kills(
    redis_servers: Callable[..., Any],
) -> None:
    server = redis_servers()
    client = connect(server.url)
    stores = {e: BoardStore(client, Settings(key_prefix=e)) for e in APPS}
    sups = {e: Supervisor(app, stores[e]) for e, app in APPS.items()}
    for sup in sups.values():
        await sup.publish()
    soak = Soak(server.url, tempfile.mkdtemp(prefix="bb-soak-"))
    for example, app in APPS.items():
        soak.roles += [Role(example, "", i) for i in range(2)]
        soak.roles += [Role(example, a.name, i) for a in app.agents for i in range(2)]
    rng = random.Random(int(os.environ.get("BLACKBOARD_SOAK_SEED", "20")))
    try:
        for role in soak.roles:
            soak.spawn(role)

        async def all_beating() -> bool:
            pipe = client.pipeline(transaction=False)
            for role in soak.roles:
                pipe.exists(GlobalKeys(role.example).live(role.name))
            return all(await pipe.execute())

        await wait_until(all_beating, 120, "not every process started")
        started = time.monotonic()
        next_kill, next_burst, serial, aim = started + KILL_EVERY_S, started, 0, True
        while time.monotonic() - started < DURATION_S:
            now = time.monotonic()
            if now >= next_burst:  # a burst of boards, across the examples
                for _ in range(rng.randint(2, 6)):
                    example = rng.choice(list(APPS))
                    case = rng.choice(list(INPUTS[example]))
                    serial += 1
                    board = f"{example}-{case}-{serial}"
                    await sups[example].start(board, INPUTS[example][case])
                    soak.boards.append((example, case, board))
                next_burst = now + BURST_EVERY_S
            if now >= next_kill:
                # Every other kill is aimed: at a process holding unacknowledged work, as
                # soon as one does (looked for during up to one kill interval).
                live = soak.by_name()
                victims = [v for v in await holders(client) if v in live] if aim else []
                if victims:
                    soak.aimed += 1
                    soak.kill(live[rng.choice(victims)])
                elif not aim or now >= next_kill + KILL_EVERY_S:
                    soak.kill(rng.choice(soak.roles))
                else:
                    await asyncio.sleep(0.01)
                    continue
                aim = not aim
                next_kill = now + KILL_EVERY_S
            await asyncio.sleep(0.05)

        async def all_settled() -> bool:
            pipe = client.pipeline(transaction=False)
            for example, _, board in soak.boards:
                pipe.hget(stores[example].keys(board).meta, "status")
            return all(s in STOPPED for s in await pipe.execute())

        try:
            await wait_until(all_settled, SETTLE_S, "boards still active")
        finally:
            soak.stop()

        outcomes: Counter[tuple[str, str, str]] = Counter()
        wrong: list[str] = []
        for example, case, board in soak.boards:
            store = stores[example]
            meta = await client.hgetall(store.keys(board).meta)
            status, reason = meta["status"], meta.get("escalated_reason", "")
            held = await client.hkeys(store.keys(board).held)
            why = reason.split(":")[0] or (f"held {len(held)}" if held else "")
            outcomes[(example, status, why)] += 1
            if not intended(example, case, status, reason):
                results = await client.hvals(store.keys(board).results)
                refused = [r for r in results if '"status":"committed"' not in r][-3:]
                wrong.append(f"{board}: {status} {reason}; last refusals: {refused}")
            log = await store.history(board)
            ids = Counter(e.proposal_id for e in log if e.proposal_id)
            twice = [p for p, n in ids.items() if n > 1]
            assert not twice, f"{board}: proposals committed twice: {twice}"
            initial = (await store.read(board, at=0)).data
            current = (await store.read(board)).data
            assert replay(copy.deepcopy(initial), [e.patch for e in log]) == current, board
        print(
            f"\nsoak: {DURATION_S:g} s, {len(soak.boards)} boards, {soak.kills} kills "
            f"({soak.aimed} aimed at a holder of unacknowledged work), "
            f"{len(soak.roles)} processes; logs in {soak.logs}"
        )
        for (example, status, why), n in sorted(outcomes.items()):
            print(f"  {example:<12} {status:<18} {why:<12} {n}")
        assert not wrong, f"{len(wrong)} boards ended other than intended: {wrong[:10]}"
    finally:
        soak.stop()
        await client.aclose()
