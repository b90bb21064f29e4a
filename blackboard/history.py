"""Reading the past: log entries, the board at any version, diffs.

Reading version V costs one snapshot read plus the patches logged after that snapshot,
which the commit script keeps to at most about a board's worth of bytes; never O(V).
"""

from __future__ import annotations

from typing import Any

import jsonpatch
from jsonpatch import JsonPatchException
from jsonpointer import JsonPointerException

from blackboard import codec
from blackboard.records import LogEntry

__all__ = ["entry_from_stream", "replay", "state_from_reply"]


def entry_from_stream(entry_id: str, fields: dict[str, str], where: str = "a log") -> LogEntry:
    """A log entry from its stream entry; ``where``: the log's name, for the message.

    Raises:
        CorruptData: the entry is not one the commit script wrote.
    """
    what = f"entry {entry_id} of {where}"
    keys = fields.get("keys", "")
    try:
        return LogEntry(
            version=int(entry_id.split("-", 1)[0]),
            author=fields["author"],
            kind=fields["kind"],  # type: ignore[arg-type]
            keys=keys.split(",") if keys else [],
            patch=codec.loads(fields["patch"], what),
            undo=codec.loads(fields["undo"], what),
            proposal_id=fields.get("proposal", ""),
            activation_id=fields.get("activation", ""),
            trace_id=fields.get("trace", ""),
            ts_ms=int(fields["ts"]),
            reason=fields.get("reason", ""),
            outcome=fields.get("outcome", ""),
        )
    except (KeyError, ValueError) as exc:  # a missing field, a bad number or shape
        raise codec.corrupt(what, f"is not a log entry ({exc!r})") from exc


def replay(state: dict[str, Any], patches: list[list[dict[str, Any]]]) -> dict[str, Any]:
    """Apply forward patches in order, in place. Used for read-at-version.

    Whole-key operations (most of the log: the commit path writes them for blind
    updates and rollbacks) are applied as dict operations; jsonpatch's per-call set-up
    costs about 100 us, which would dominate reading a version far from a snapshot.
    Anything else goes through jsonpatch, so results are identical.
    """
    for ops in patches:
        if all(_whole_key(op) for op in ops):
            for op in ops:
                if op["op"] == "remove":
                    del state[op["path"][1:]]
                else:
                    state[op["path"][1:]] = op["value"]
        else:
            state = jsonpatch.apply_patch(state, ops, in_place=True)
    return state


def _whole_key(op: dict[str, Any]) -> bool:
    path = op.get("path", "")
    return op.get("op") in ("add", "replace", "remove") and path.count("/") == 1 and "~" not in path


def state_from_reply(reply: list[Any], what: str = "a board") -> dict[str, Any]:
    """The board rebuilt from ``read_at.lua``'s answer: a snapshot plus patches.

    Raises:
        CorruptData: the snapshot or a patch is not what the commit script wrote.
    """
    state: dict[str, Any] = codec.loads(reply[2], f"the snapshot of {what}")
    patches = codec.loads(reply[3], f"a logged patch of {what}")
    try:
        return replay(state, patches)
    except (
        KeyError,
        TypeError,
        ValueError,
        AttributeError,
        JsonPatchException,
        JsonPointerException,
    ) as exc:
        raise codec.corrupt(f"the log of {what}", f"does not replay ({exc!r})") from exc
