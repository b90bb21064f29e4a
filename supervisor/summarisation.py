"""Summarisation, the supervisor's side: when a summarisable key is due (once per
threshold crossing, decided in Redis), what a summary may write (only that key), and how
a summary lands on a key that grew while it was being made (on top of what was appended
since, rather than as a conflict the summariser would lose to a busy writer for ever).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from blackboard import codec
from blackboard.app import App
from blackboard.errors import ConflictError, OwnershipError
from blackboard.keys import BoardKeys
from blackboard.patch import plan
from blackboard.records import Proposal
from blackboard.store import BoardStore, redis_failures

__all__ = ["STARTING_MS", "Crossings", "OnTop", "check_summary"]

STARTING_MS = 10_000
"""How long a started summarisation may take to be among the board's open activations
(the routing that decided it creates it a round trip later): a pending one not open
after this died, and the next commit that finds its key over the threshold starts
another. Seconds above a routing's time, far below an operator's."""


class Crossings:
    """Which summarisable keys a commit makes due: ``lua/summarise.lua``, one atomic
    decision per commit, so a crossing starts one summarisation whichever replica
    routes the commits that follow it."""

    def __init__(self, redis: Redis, app: App) -> None:
        self.app = app
        source = resources.files("blackboard.supervisor").joinpath("lua", "summarise.lua")
        self._script = redis.register_script(source.read_text())

    async def queue(
        self,
        pipe: Pipeline,
        bk: BoardKeys,
        keys: Sequence[str],
        author: str,
        routing: str,
        patch: Sequence[Mapping[str, Any]] = (),
    ) -> bool:
        """Queue the decision for ``keys`` (summarisable keys a commit by ``author``
        changed, routed as ``routing``: the same routing id gets the same answer;
        ``patch``: what the author proposed) on ``pipe``, whose reply for it is the
        list of keys due. False if nothing was queued (the app has no summariser, or
        no key changed)."""
        summariser = self.app.summariser
        if summariser is None or not keys:
            return False
        now = int(time.time() * 1000)
        own = author == summariser
        args: list[Any] = [summariser, "0" if own else "1", routing, now, STARTING_MS]
        # The summariser's commit is judged by its summary, not by what was appended to
        # the key while it was made (OnTop): that is for the next crossing.
        proposed = {
            op.get("path"): op.get("value")
            for op in patch
            if own and op.get("op") in ("add", "replace")
        }
        for key in keys:
            limit_bytes, limit_tokens = self.app.summary_threshold(key)
            size = ""
            if f"/{key}" in proposed:
                size = str(codec.utf8_len(codec.dumps(proposed[f"/{key}"])))
            args += [key, limit_bytes, limit_tokens or 0, size]
        await self._script(
            keys=[bk.state, bk.loops, bk.open, bk.activations], args=args, client=pipe
        )
        return True


def check_summary(app: App, proposal: Proposal, key: str) -> None:
    """A summary writes only the summarisable key it was activated for: its commit is
    the supervisor's (no owner check), so anything else would overwrite another
    agent's key unchecked.

    Raises:
        OwnershipError: the key is not summarisable, or the patch writes another key.
        ValidationFailed: the patch is malformed.
    """
    spec = app.schema.keys.get(key)
    if spec is None or not spec.summarisable:
        raise OwnershipError(
            f"a summary by {proposal.author!r} was asked for key {key!r}, which is not a "
            "summarisable key of the board. Summaries condense only keys declared "
            "summarisable=True.",
            author=proposal.author,
            key=key,
        )
    others = [k for k in plan(proposal.patch, app.schema).writes if k != key]
    if others:
        owned = ", ".join(f"{k!r} (owned by {app.schema.owner(k)!r})" for k in others)
        raise OwnershipError(
            f"a summary by {proposal.author!r} may write only {key!r}, the summarisable "
            f"key it was activated for; it also writes {owned}. Propose the condensed "
            f"{key!r} alone.",
            author=proposal.author,
            key=others[0],
        )


class OnTop:
    """A summary moved onto its key as it is now, if the key only grew at its end after
    the summary's base (a list appended to, a string extended): the summary replaces
    what it condensed and what was appended since follows it, verbatim. Otherwise (the
    key was rewritten, or the summary is not one whole value) the proposal stays as it
    is, and a changed key is a conflict as for any write.

    One per summary, for all its attempts: what the summariser condensed (the key at
    the base) is read once; each attempt then costs one round trip before its commit,
    short enough to win against a writer that commits as fast as it can."""

    def __init__(self, store: BoardStore, board_id: str, proposal: Proposal, key: str) -> None:
        """``proposal``: the summary of ``key`` as the summariser made it."""
        self.store = store
        self.board_id = board_id
        self.original = proposal
        self.key = key
        self._condensed: list[Any] = []  # the key at the base, once read
        self.stuck = False
        """The summary cannot be moved (the key changed other than by growing at its
        end, or the summary is not one whole value): retrying cannot help."""

    def may_retry(self, conflict: ConflictError) -> bool:
        """Whether moving the summary again can help: only its own key changed."""
        return not self.stuck and set(conflict.changed) == {self.key}

    async def proposal(self) -> Proposal:
        """The proposal to commit now (see the class)."""
        original, key = self.original, self.key
        ops = original.patch
        if len(ops) != 1 or ops[0].get("op") not in ("add", "replace"):
            self.stuck = True
            return original
        if ops[0].get("path") != f"/{key}":
            self.stuck = True
            return original
        bk = self.store.keys(self.board_id)
        async with redis_failures(f"read board {self.board_id!r}"):
            pipe = self.store.redis.pipeline(transaction=True)
            pipe.hget(bk.meta, "version")
            pipe.hget(bk.state, key)
            pipe.hget(bk.kver, key)
            version, raw, changed_at = await pipe.execute()
        if version is None or raw is None or int(changed_at or 0) <= original.base:
            return original  # gone (the commit says so), or unchanged since the base
        if not self._condensed:
            at_base = await self.store.read_key(self.board_id, key, at=original.base)
            self._condensed.append(at_base)
        before, now, summary = self._condensed[0], codec.loads(raw), ops[0]["value"]
        if isinstance(before, list) and isinstance(now, list) and isinstance(summary, list):
            if now[: len(before)] != before:
                self.stuck = True
                return original
            value: Any = [*summary, *now[len(before) :]]
        elif isinstance(before, str) and isinstance(now, str) and isinstance(summary, str):
            if not now.startswith(before):
                self.stuck = True
                return original
            value = summary + now[len(before) :]
        else:
            self.stuck = True
            return original
        return original.model_copy(
            update={"base": int(version), "patch": [{**ops[0], "value": value}]}
        )
