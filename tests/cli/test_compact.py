"""``blackboard compact`` against a real redis-server: asks first, compacts, answers
``--json``, and time travel afterwards refuses the dropped versions in one line."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from click.testing import CliRunner, Result

from blackboard import BoardSchema, BoardStore, Settings, connect
from blackboard.cli import main
from tests.blackboard.test_history import fill

pytestmark = [pytest.mark.real_redis]


@pytest.fixture
def url(redis_server: Any, loan_schema: BoardSchema) -> str:
    """Board loan-1 at version 20 (compliant at 15), with snapshots along the way."""

    async def setup() -> None:
        store = BoardStore(connect(redis_server.url), Settings(snapshot_min_bytes=256))
        await store.redis.flushdb()
        await store.create("loan-1", loan_schema)
        await fill(store, "loan-1", 20)
        # as a supervisor records it: the audit rollback's target, which compact keeps
        await store.redis.hset(store.keys("loan-1").meta, "compliant", 15)
        await store.close()

    asyncio.run(setup())
    return str(redis_server.url)


def invoke(url: str, *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, ["--redis", url, *args], input=stdin)


def test_compact_asks_then_compacts_and_reads_refuse_below(url: str) -> None:
    refused = invoke(url, "compact", "loan-1", "--below", "20", stdin="n\n")
    assert refused.exit_code == 1, refused.output
    assert refused.stderr.splitlines()[-1] == (
        "error: board loan-1 not compacted (pass --yes not to be asked)."
    )
    assert invoke(url, "show", "loan-1", "--at", "0", "--json").exit_code == 0

    done = invoke(url, "compact", "loan-1", "--below", "20", "--yes", "--json")
    assert done.exit_code == 0, done.output
    answer = json.loads(done.stdout)
    since = answer["history_from"]
    assert 0 < since <= 15
    assert answer == {
        "board": "loan-1",
        "command": "compact",
        "status": "compacted",
        "version": 20,
        "history_from": since,
    }
    shown = invoke(url, "show", "loan-1", "--at", str(since), "--json")
    assert shown.exit_code == 0 and json.loads(shown.stdout)["version"] == since
    gone = invoke(url, "show", "loan-1", "--at", str(since - 1), "--json")
    assert gone.exit_code == 1
    assert gone.stderr.strip().splitlines() == [
        f"error: board 'loan-1''s history before v{since} was compacted; versions "
        f"{since}..20 can be read (version {since - 1} cannot)."
    ]
    history = json.loads(invoke(url, "history", "loan-1", "--json").stdout)
    assert [h["version"] for h in history] == list(range(since, 21))
    again = invoke(url, "compact", "loan-1", "--below", "20", "--yes")
    assert again.exit_code == 0 and f"history now starts at version {since}" in again.stdout


def test_compact_refuses_a_version_the_board_does_not_have(url: str) -> None:
    bad = invoke(url, "compact", "loan-1", "--below", "21", "--yes")
    assert bad.exit_code == 1
    assert "has versions 0..20; version 21 does not exist" in bad.stderr
    missing = invoke(url, "compact", "nope", "--below", "0", "--yes")
    assert missing.exit_code == 1 and "board 'nope' does not exist" in missing.stderr
