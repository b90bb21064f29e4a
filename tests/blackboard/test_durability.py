"""The optional WAIT durability level, against real replication (real server only)."""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

import pytest

from blackboard import BoardSchema, BoardStore, Proposal, Settings, connect

pytestmark = [pytest.mark.real_redis, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_commit_waits_for_a_real_replica(
    redis_servers: Any, loan_schema: BoardSchema
) -> None:
    port = free_port()
    primary = redis_servers("--repl-diskless-sync-delay", "0", port=port)
    replica = redis_servers("--replicaof", "127.0.0.1", str(port))
    with replica.client() as c:  # wait until the replica is in sync
        deadline = time.monotonic() + 15
        while c.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "replica never synced"
            time.sleep(0.05)
    store = BoardStore(connect(primary.url), Settings(wait_replicas=1))
    await store.create("b", loan_schema)
    result = await store.commit("b", Proposal.updates("risk", 0, {"risk_rating": "low"}))
    assert result.replicas == 1
    with replica.client() as c:  # acknowledged means it is on the replica now
        assert c.hget(store.keys("b").state, "risk_rating") == '"low"'
    await store.close()


async def test_missing_replica_is_reported_not_fatal(
    redis_server: Any, loan_schema: BoardSchema, caplog: pytest.LogCaptureFixture
) -> None:
    client = connect(redis_server.url)
    await client.flushdb()
    store = BoardStore(client, Settings(wait_replicas=1, wait_timeout_ms=20))
    await store.create("b", loan_schema)
    with caplog.at_level(logging.WARNING, logger="blackboard.store"):
        result = await store.commit("b", Proposal.updates("risk", 0, {"risk_rating": "low"}))
    assert (result.version, result.replicas) == (1, 0)
    assert "acknowledged by 0 of 1 replicas" in caplog.text
    assert await store.read_key("b", "risk_rating") == "low"
    await store.close()
