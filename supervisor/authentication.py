"""Authentication: where a submission came from decides who made it.

Every agent appends to its own submission streams (``GlobalKeys.submissions``), the
operators to theirs (``GlobalKeys.commands``). With one Redis user per role (see
``blackboard acl``) only that agent's user can append to its stream, so the stream is the
author's identity; a field in the message is only a claim, checked against it. Before a
batch is worked on (``supervisor/intake.py`` calls :meth:`Authentication.screen`), it
refuses:

- on an agent's stream: a submission claiming another author, an operator command, an
  activation report (or 'running' mark) for an activation not given to that agent, or an
  activation record that is not that activation's;
- on the operators' stream: anything but a command.

The supervisor's own stream (its watchdog's reports) is trusted: only its user writes it.

It also refuses, clearly and without calling it an attack, a proposal based on a version
older than the proposal records its board still keeps, whose own record is gone: it may
have committed long ago, and it must not be applied twice.

A refused entry is logged, recorded as a ``security`` incident on its board (when the
board exists: a made-up board id creates nothing), and dead-lettered with the reason, so
the evidence is kept and nothing of it is applied.

The embedded default (fakeredis, one process) has no Redis users: whoever reaches it can
append to any stream, so these checks are only as strong as the ACLs in front of them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

from blackboard.supervisor.incidents import Incidents
from pydantic import ValidationError
from redis.asyncio import Redis

from blackboard import codec
from blackboard.errors import ConfigError
from blackboard.keys import GlobalKeys, check_board_id
from blackboard.queues import RUNNING_FIELD, Delivery, WorkQueue
from blackboard.records import Activation, Submission

KEPT_FROM = "records_from"
"""Field of a board's meta hash, kept by the retention (``supervisor/retention.py``):
the first version whose proposal records are all kept. A proposal based on an earlier
version whose own record is gone is refused here: it may have committed, and nothing
could tell; its commit, if any, is in the log."""

__all__ = ["KEPT_FROM", "Authentication", "Source"]

log = logging.getLogger(__name__)

_RUNNING = """
-- An agent's 'running' mark, applied only over the record the supervisor queued for it.
-- KEYS[1] the board's activation records (hash)
-- ARGV[1] activation id   ARGV[2] the agent (the stream it came on)   ARGV[3] record JSON
-- Returns 1 applied, 0 not (already past 'queued'), -1 not this agent's activation.
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if not raw then return -1 end
local act = cjson.decode(raw)
if act['agent'] ~= ARGV[2] then return -1 end
if act['status'] ~= 'queued' then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""


@dataclass(frozen=True)
class Source:
    """One submission stream and who may append to it."""

    stream: str
    role: Literal["agent", "operator", "supervisor"]
    agent: str | None = None
    """For an agent's stream: the agent."""


class Authentication:
    """Screens what the supervisor reads, by the stream it came on.

    Args:
        redis: client with ``decode_responses=True``.
        keys: the deployment's key names.
        agents: the app's agent names.
        shards: number of streams per author.
        incidents: where a refusal is recorded.
    """

    def __init__(
        self,
        redis: Redis,
        keys: GlobalKeys,
        agents: Sequence[str],
        shards: int,
        incidents: Incidents,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self.incidents = incidents
        self.sources = [
            Source(keys.submissions(agent, s), "agent", agent)
            for agent in agents
            for s in range(shards)
        ]
        self.sources += [Source(keys.commands(s), "operator") for s in range(shards)]
        self.sources += [Source(keys.reports(s), "supervisor") for s in range(shards)]
        self._by_stream = {source.stream: source for source in self.sources}
        self._running = redis.register_script(_RUNNING)

    async def screen(
        self, queue: WorkQueue, deliveries: list[Delivery]
    ) -> list[tuple[Delivery, Submission]]:
        """The batch's submissions that are what they claim, in order; the others are
        dead-lettered (invalid) or refused (see the module's docstring), 'running'
        marks applied and acknowledged."""
        source = self._by_stream.get(queue.stream, Source(queue.stream, "operator"))
        parsed: list[tuple[Delivery, Submission | None]] = []
        for d in deliveries:
            if source.agent is not None and RUNNING_FIELD in d.fields:
                await self._mark_running(queue, source.agent, d)
                continue
            try:
                parsed.append((d, Submission.model_validate_json(d.fields.get("s", ""))))
            except ValueError:
                await queue.dead_letter(d, "not a valid submission")
        subs = [s for _, s in parsed if s is not None]
        givens, kept_from = await self._look_up(source, subs)
        forgotten = await self._forgotten(subs, kept_from) if kept_from else {}
        accepted = []
        for d, sub in parsed:
            assert sub is not None
            why = self._refusal(source, d, sub, givens)
            if why is not None:
                await self.refuse(queue, d, sub.board_id, why)
            elif sub.proposal_id in forgotten:
                kept = forgotten[sub.proposal_id]
                why = (
                    f"proposal {sub.proposal_id} on board {sub.board_id!r} is based on "
                    f"v{sub.base}, older than the proposal records the board keeps (from "
                    f"v{kept}): whether it committed cannot be told, so it is not applied. "
                    "If it committed, its commit is in the log (blackboard history); "
                    "otherwise submit it again on the current version."
                )
                log.warning("refused %s from %s: %s", d.entry_id, queue.stream, why)
                await queue.dead_letter(d, why)
            else:
                accepted.append((d, sub))
        reports = [(sub, d.fields["a"]) for d, sub in accepted if d.fields.get("a")]
        if reports:  # the agent's record of its activation, checked above: kept as it sent it
            pipe = self.redis.pipeline(transaction=False)
            for sub, report in reports:
                pipe.hset(self.keys.board(sub.board_id).activations, sub.activation_id, report)
            await pipe.execute()
        return accepted

    async def _look_up(
        self, source: Source, subs: list[Submission]
    ) -> tuple[dict[tuple[str, str], str], dict[str, int]]:
        """In one round trip: (board, activation id) -> the agent it was given to, for the
        activations an agent's submissions name; and board -> its ``records_from``, for
        the boards proposals are on whose retention dropped old records."""
        named = list(dict.fromkeys((s.board_id, s.activation_id) for s in subs if s.activation_id))
        if source.agent is None:
            named = []
        boards = list(dict.fromkeys(s.board_id for s in subs if s.kind == "proposal"))
        if not named and not boards:
            return {}, {}
        pipe = self.redis.pipeline(transaction=False)
        for board_id, aid in named:
            pipe.hget(self.keys.board(board_id).activations, aid)
        for board_id in boards:
            pipe.hget(self.keys.board(board_id).meta, KEPT_FROM)
        replies = await pipe.execute()
        given = {}
        for key, raw in zip(named, replies[: len(named)], strict=True):
            if raw is not None:
                try:
                    given[key] = str(codec.loads(raw).get("agent", ""))
                except ValueError:
                    given[key] = ""
        kept = {b: int(v) for b, v in zip(boards, replies[len(named) :], strict=True) if v}
        return given, kept

    async def _forgotten(self, subs: list[Submission], kept: dict[str, int]) -> dict[str, int]:
        """Proposal id -> the board's ``records_from`` (``kept``), for proposals based on a
        version whose records the retention may have dropped and whose own record is gone
        (see ``supervisor/retention.py``): a duplicate of those could not be recognised."""
        proposals = [s for s in subs if s.kind == "proposal"]
        # based on b, it commits at b + 1 or later: recognised if that version's are kept
        older = [s for s in proposals if s.base + 1 < kept.get(s.board_id, 0)]
        if not older:
            return {}
        pipe = self.redis.pipeline(transaction=False)
        for sub in older:
            pipe.hexists(self.keys.board(sub.board_id).committed, sub.proposal_id)
        known = await pipe.execute()
        return {s.proposal_id: kept[s.board_id] for s, k in zip(older, known, strict=True) if not k}

    @staticmethod
    def _refusal(
        source: Source, d: Delivery, sub: Submission, given: dict[tuple[str, str], str]
    ) -> str | None:
        """Why the submission is refused, or None."""
        agent = source.agent
        if source.role == "supervisor":
            return None
        if agent is None:
            if sub.kind != "command":
                return f"a {sub.kind} claiming author {sub.author!r} on the operators' stream"
            return None
        if sub.kind == "command":
            return f"an operator command ({sub.command!r}) on agent {agent!r}'s stream"
        if sub.author != agent:
            return f"a {sub.kind} claiming author {sub.author!r} on agent {agent!r}'s stream"
        if sub.activation_id:
            owner = given.get((sub.board_id, sub.activation_id))
            if owner != agent:
                whose = "no such activation" if owner is None else f"given to {owner!r}"
                return (
                    f"a {sub.kind} from agent {agent!r} for activation "
                    f"{sub.activation_id!r} ({whose})"
                )
        report = d.fields.get("a")
        if report:
            try:
                act = Activation.model_validate_json(report)
            except ValidationError:
                return f"agent {agent!r} sent an activation record that is not valid"
            if (
                act.agent != agent
                or act.activation_id != sub.activation_id
                or act.board_id != sub.board_id
            ):
                return (
                    f"agent {agent!r} sent the record of activation {act.activation_id!r} "
                    f"of {act.agent!r} with a submission for {sub.activation_id!r}"
                )
        return None

    async def _mark_running(self, queue: WorkQueue, agent: str, d: Delivery) -> None:
        try:
            act = Activation.model_validate_json(d.fields[RUNNING_FIELD])
        except ValidationError:
            await queue.dead_letter(d, "not a valid activation record")
            return
        try:
            check_board_id(act.board_id)
        except ConfigError:
            await queue.dead_letter(d, "not a valid activation record")
            return
        if act.agent != agent or act.status != "running":
            await self.refuse(
                queue, d, act.board_id, f"agent {agent!r} marked {act.agent!r}'s activation"
            )
            return
        bk = self.keys.board(act.board_id)
        applied = await self._running(
            keys=[bk.activations], args=[act.activation_id, agent, d.fields[RUNNING_FIELD]]
        )
        if int(cast(Any, applied)) < 0:
            await self.refuse(
                queue,
                d,
                act.board_id,
                f"agent {agent!r} marked activation {act.activation_id!r} running, "
                "which was not given to it",
            )
            return
        await queue.ack(d.entry_id)

    async def refuse(self, queue: WorkQueue, d: Delivery, board_id: str, why: str) -> None:
        """Log, record a ``security`` incident on the board if it exists, dead-letter."""
        log.warning("security: refused %s from %s: %s", d.entry_id, queue.stream, why)
        detail = f"refused entry {d.entry_id} of {queue.stream}: {why}"
        try:
            bk = self.keys.board(board_id)
        except ConfigError:  # not even a board id: nothing to record it on
            bk = None
        if bk is not None:
            version = await self.redis.hget(bk.meta, "version")
            if version is not None:
                await self.incidents.record(board_id, "security", detail, int(version))
        await queue.dead_letter(d, f"security: {why}")
