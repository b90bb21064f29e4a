"""The supervisor's atomic control step (``lua/route.lua``) and dispatch.

One call per submission counts tokens, cost, rewrites and handoffs (with the board's
content fingerprint), trips the circuit breaker or a budget (the board is escalated and
an incident recorded: who, what cycle, which versions), and writes the new activations
to the board's outbox. Dispatch then moves outbox entries to the agents' queues; a
redelivered submission finds its routing done and only re-dispatches what is left.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from redis.asyncio import Redis

from blackboard import codec
from blackboard.app import Limits
from blackboard.keys import GlobalKeys
from blackboard.records import Activation

__all__ = ["RouteResult", "Routing", "Router"]

log = logging.getLogger(__name__)


@dataclass
class Routing:
    """Everything one control step needs to know."""

    routing_id: str
    version: int
    tokens: int = 0
    cost: float = 0.0
    reset_rewrite: str = ""
    rewrite: str = ""
    status: str = ""
    close: str = ""
    pairs: list[str] = field(default_factory=list)
    activations: list[Activation] = field(default_factory=list)
    compliant: bool = False
    outcome: str = ""
    """The submission's outcome JSON, recorded atomically with the routing."""
    escalate: str = ""
    """``kind|detail``: escalate the board (unless already stopped) instead of routing."""


@dataclass
class RouteResult:
    outcome: str
    """``ok``, ``again`` (already routed) or ``tripped``."""
    status: str = ""
    trip_kind: str = ""
    trip_detail: str = ""
    dispatch: list[tuple[str, str, str]] = field(default_factory=list)
    """(activation id, agent, queue entry JSON) waiting in the outbox."""


_DRIVER = """
--[[ commit_route: commit.lua then route.lua in one atomic call, for a proposal whose
routing does not depend on what the commit changed (a handoff at most).

KEYS: commit.lua's KEYS (ARGV[1] of them), then route.lua's.
ARGV[1] number of commit KEYS, ARGV[2] number of commit ARGV, then commit.lua's ARGV,
then route.lua's ARGV, in which the version, the compliant flag, the outcome and each
activation record's "base":-1 are placeholders filled from the commit's result.
Returns {'commit', commit reply} if the commit did not happen (nothing routed), else
{'both', commit reply, route reply}.
]]
local NK, NA = tonumber(ARGV[1]), tonumber(ARGV[2])
local ck, ca, rk, ra = {}, {}, {}, {}
for i = 1, NK do ck[i] = KEYS[i] end
for i = NK + 1, #KEYS do rk[#rk + 1] = KEYS[i] end
for i = 3, NA + 2 do ca[#ca + 1] = ARGV[i] end
for i = NA + 3, #ARGV do ra[#ra + 1] = ARGV[i] end
local c = commit(ck, ca)
if c[1] ~= 'ok' then return {'commit', c} end
local v = c[2]
local changed = {}
for i = 4, #c do changed[#changed + 1] = '"' .. c[i] .. '"' end
ra[15] = v
ra[#ra - 1] = (#changed > 0) and '1' or '0'
ra[#ra] = '{"status":"committed","version":' .. v .. ',"keys":[' ..
  table.concat(changed, ',') .. '],"audit":"","reason":"","message":""}'
local P = tonumber(ra[16])
local A = tonumber(ra[17 + P])
for i = 0, A - 1 do
  local o = 17 + P + 1 + 5 * i + 3
  ra[o] = (string.gsub(ra[o], '"base":%-1,', '"base":' .. v .. ',', 1))
end
return {'both', c, route(rk, ra)}
"""


def _combined() -> str:
    """commit.lua and route.lua, each wrapped as a function, plus the driver above."""
    commit = resources.files("blackboard").joinpath("lua", "commit.lua").read_text()
    route = resources.files("blackboard.supervisor").joinpath("lua", "route.lua").read_text()
    return (
        f"local function commit(KEYS, ARGV)\n{commit}\nend\n"
        f"local function route(KEYS, ARGV)\n{route}\nend\n{_DRIVER}"
    )


class Router:
    def __init__(self, redis: Redis, keys: GlobalKeys, limits: Limits) -> None:
        self.redis = redis
        self.keys = keys
        self.limits = limits
        source = resources.files("blackboard.supervisor").joinpath("lua", "route.lua")
        self._script = redis.register_script(source.read_text())
        self._commit_route = redis.register_script(_combined())

    async def route(self, board_id: str, step: Routing) -> RouteResult:
        keys, args = self._call(board_id, step)
        return await self._parse(board_id, step, await self._script(keys=keys, args=args))

    async def pending(self, board_id: str) -> RouteResult:
        """The board's undispatched activations (after a pause, or a crash before
        dispatch), to send now."""
        bk = self.keys.board(board_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hget(bk.meta, "status")
        pipe.hgetall(bk.outbox)
        status, outbox = await pipe.execute()
        rows = [(aid, codec.loads(entry)["agent"], entry) for aid, entry in outbox.items()]
        return RouteResult("ok", status or "", dispatch=rows)

    async def commit_and_route(
        self, board_id: str, commit_keys: list[str], commit_args: list[Any], step: Routing
    ) -> tuple[list[Any], RouteResult | None]:
        """Commit and route atomically; the route result is None if the commit did not
        happen (its reply says why)."""
        keys, args = self._call(board_id, step)
        reply = await self._commit_route(
            keys=[*commit_keys, *keys],
            args=[len(commit_keys), len(commit_args), *commit_args, *args],
        )
        if reply[0] == "commit":
            return reply[1], None
        return reply[1], await self._parse(board_id, step, reply[2])

    def _call(self, board_id: str, step: Routing) -> tuple[list[str], list[Any]]:
        bk = self.keys.board(board_id)
        lim = self.limits
        args: list[Any] = [
            step.routing_id,
            int(time.time() * 1000),
            "",
            lim.loop_threshold,
            lim.max_activations,
            lim.max_rewrites,
            step.tokens,
            repr(float(step.cost)),
            lim.max_tokens or 0,
            lim.max_cost or 0,
            step.reset_rewrite,
            step.rewrite,
            step.status,
            step.close,
            step.version,
            len(step.pairs),
            *step.pairs,
            len(step.activations),
        ]
        for act in step.activations:
            entry = codec.dumps(
                {"agent": act.agent, "board": board_id, "activation": act.activation_id}
            )
            args += [act.activation_id, act.agent, act.deadline_ms, act.model_dump_json(), entry]
        args.append(step.escalate)
        args.append("1" if step.compliant else "0")
        args.append(step.outcome)
        keys = [
            bk.meta,
            bk.loops,
            bk.routed,
            bk.activations,
            bk.open,
            bk.outbox,
            bk.incidents,
            bk.results,
            bk.khash,
        ]
        return keys, args

    async def _parse(self, board_id: str, step: Routing, reply: list[Any]) -> RouteResult:
        if reply[0] == "tripped":
            log.warning(
                "board %s escalated: %s: %s",
                board_id,
                reply[1],
                reply[2],
                extra={"board": board_id, "version": step.version},
            )
            await self.redis.zadd(self.keys.escalations, {board_id: time.time() * 1000})
            return RouteResult("tripped", "escalated", reply[1], reply[2])
        rows = reply[2:]
        outbox = [(rows[i], rows[i + 1], rows[i + 2]) for i in range(0, len(rows), 3)]
        return RouteResult(reply[0], reply[1], dispatch=outbox)

    async def dispatch(
        self,
        board_id: str,
        result: RouteResult,
        *,
        deadline_ms: int = 0,
        ack: tuple[str, str, str] | None = None,
        batch: list[Any] | None = None,
    ) -> None:
        """Move outbox entries to agent queues (if the board is active), note the
        earliest deadline for the watchdog, then acknowledge the submission's stream
        entry. With ``batch``, the commands are collected and sent once for the whole
        consumer batch (:meth:`flush`); either way each submission's ack follows its
        dispatch, and Redis runs a pipeline in order."""
        commands: list[Any] = batch if batch is not None else []
        if result.status == "active":
            bk = self.keys.board(board_id)
            for activation_id, agent, entry in result.dispatch:
                commands.append(("xadd", self.keys.queue(agent), codec.loads(entry)))
                commands.append(("hdel", bk.outbox, activation_id))
        if deadline_ms:
            commands.append(("zadd", self.keys.watch, {board_id: deadline_ms}))
        if ack is not None:
            commands.append(("xack", *ack))
        if batch is None:
            await self.flush(commands)

    async def flush(self, commands: list[Any]) -> None:
        """Send collected dispatch commands in one round trip."""
        if not commands:
            return
        pipe = self.redis.pipeline(transaction=False)
        for name, *args in commands:
            if name == "xadd":
                pipe.xadd(args[0], args[1])
            elif name == "hdel":
                pipe.hdel(args[0], args[1])
            elif name == "zadd":
                pipe.zadd(args[0], args[1], lt=True)
            else:
                pipe.xack(*args)
        await pipe.execute()
        commands.clear()
