"""Reading the past: log entries, the board at any version, diffs.

Reading version V costs one snapshot read plus the patches logged after that snapshot,
which the commit script keeps to at most about a board's worth of bytes; never O(V).
"""

from __future__ import annotations

from typing import Any

import jsonpatch
from redis.asyncio import Redis

from blackboard import codec
from blackboard.keys import BoardKeys
from blackboard.records import LogEntry

__all__ = ["entry_from_stream", "replay", "state_at"]


def entry_from_stream(entry_id: str, fields: dict[str, str]) -> LogEntry:
    keys = fields.get("keys", "")
    return LogEntry(
        version=int(entry_id.split("-", 1)[0]),
        author=fields["author"],
        kind=fields["kind"],  # type: ignore[arg-type]
        keys=keys.split(",") if keys else [],
        patch=codec.loads(fields["patch"]),
        undo=codec.loads(fields["undo"]),
        proposal_id=fields.get("proposal", ""),
        activation_id=fields.get("activation", ""),
        trace_id=fields.get("trace", ""),
        ts_ms=int(fields["ts"]),
        reason=fields.get("reason", ""),
        outcome=fields.get("outcome", ""),
    )


def replay(state: dict[str, Any], patches: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """Apply forward patches in order. Used for read-at-version and to check the log."""
    for ops in patches:
        state = jsonpatch.apply_patch(state, ops, in_place=True)
    return state


async def state_at(redis: Redis, keys: BoardKeys, version: int) -> dict[str, Any]:
    """The board's content at ``version`` (which the caller checked exists)."""
    found = await redis.zrevrangebyscore(keys.snapshot_index, version, "-inf", start=0, num=1)
    snap_version = int(found[0])
    pipe = redis.pipeline(transaction=False)
    pipe.hget(keys.snapshots, str(snap_version))
    if version > snap_version:
        pipe.xrange(keys.log, f"{snap_version + 1}-0", f"{version}-0")
    replies = await pipe.execute()
    state: dict[str, Any] = codec.loads(replies[0])
    if version > snap_version:
        state = replay(state, [codec.loads(fields["patch"]) for _, fields in replies[1]])
    return state
