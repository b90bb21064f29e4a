"""The compliant version, decided by what the audits passed, whichever replica ran them
(``lua/audit.lua``).

A version's audits that pass are recorded at once, atomically; a failed audit claims a
rollback whose target is the newest version below it that passed (never skipping one),
and the writes the rollback drops, other than the failing one, are re-activated: their
authors redo them with the reason as feedback. An audit that passes after a rollback
dropped its version records nothing (that content is gone).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from redis.asyncio import Redis

from blackboard.keys import GlobalKeys
from blackboard.records import LogEntry
from blackboard.store import BoardStore

__all__ = ["Claim", "Compliance", "Dropped"]


@dataclass(frozen=True)
class Dropped:
    """A version a rollback dropped (claimed under ``proposal_id``, back to ``target``)."""

    proposal_id: str
    target: int


@dataclass(frozen=True)
class Claim:
    """An audit rollback, decided once: back to ``target`` because ``audit`` failed with
    ``message`` (the first decision's, if the failure was handled before)."""

    target: int
    audit: str
    message: str


class Compliance:
    def __init__(self, redis: Redis, keys: GlobalKeys) -> None:
        self.redis = redis
        self.keys = keys
        source = resources.files("blackboard.supervisor").joinpath("lua", "audit.lua")
        self._script = redis.register_script(source.read_text())

    def _keys(self, board_id: str) -> list[str]:
        bk = self.keys.board(board_id)
        return [bk.meta, bk.passed, bk.claims, bk.committed]

    async def passed(self, board_id: str, version: int) -> Dropped | None:
        """Record that ``version`` passed its audits (it becomes compliant if it is the
        newest that did); or, if a rollback dropped it, say which (nothing recorded)."""
        reply = await self._script(keys=self._keys(board_id), args=["pass", version])
        if reply[0] == "dropped":
            return Dropped(str(reply[1]), int(reply[2]))
        return None

    async def claim(
        self, board_id: str, version: int, proposal_id: str, audit: str, message: str
    ) -> Claim | Dropped:
        """Decide the rollback after ``version`` failed ``audit`` (once per rollback
        ``proposal_id``); or, if an earlier rollback dropped ``version`` already, say
        which (nothing to roll back: its content is gone)."""
        reply = await self._script(
            keys=self._keys(board_id),
            args=["claim", version, proposal_id, f"{audit}|{message}"],
        )
        if reply[0] == "dropped":
            return Dropped(str(reply[1]), int(reply[2]))
        name, _, why = str(reply[2]).partition("|")
        return Claim(int(reply[1]), name, why)

    async def restore(
        self, board_id: str, target: int, proposal_id: str, why: str, *, by: str = "flag"
    ) -> None:
        """Claim a rollback to ``target`` chosen by its caller (a flag's, an operator's:
        ``by``), before it is committed: what it drops is never compliant again, nor a
        later rollback's target."""
        await self._script(
            keys=self._keys(board_id), args=["restore", target, proposal_id, f"{by}|{why}"]
        )

    async def abandon(self, board_id: str, proposal_id: str) -> None:
        """Forget the claim of a rollback that could not be committed (an operator's that
        failed, say): without it, every version above its target would count as dropped
        for ever, and every audited commit after it would route nothing."""
        await self.redis.hdel(self.keys.board(board_id).claims, proposal_id)

    async def decided(self, board_id: str, proposal_id: str) -> Claim | None:
        """The rollback claimed under ``proposal_id``, if one was (a redelivered failure
        finishes it, whatever its audits say on a second run)."""
        raw = await self.redis.hget(self.keys.board(board_id).claims, proposal_id)
        if raw is None:
            return None
        target, name, why = str(raw).split("|", 2)
        return Claim(int(target), name, why)

    async def dropped_writes(
        self, store: BoardStore, board_id: str, proposal_id: str, agents: set[str]
    ) -> tuple[Claim, list[LogEntry]] | None:
        """The rollback claimed under ``proposal_id`` and the agents' writes it dropped
        (the newest of each author), once it committed; None if it did not."""
        claim = await self.decided(board_id, proposal_id)
        at = await self.redis.hget(self.keys.board(board_id).committed, proposal_id)
        if claim is None or at is None:
            return None
        newest: dict[str, LogEntry] = {}
        for entry in await store.history(board_id, start=claim.target + 1, end=int(at) - 1):
            if entry.kind == "write" and entry.author in agents:
                newest[entry.author] = entry
        return claim, sorted(newest.values(), key=lambda e: e.version)
