"""The routing step: the supervisor's atomic control step (``lua/route.lua``) and dispatch.

One call per submission counts tokens, cost, rewrites and handoffs (with the board's
content fingerprint), trips the circuit breaker or a budget (the board is escalated and
an incident recorded: who, what cycle, which versions), and writes the new activations
to the board's outbox. Dispatch then moves outbox entries to the agents' queues; a
redelivered submission finds its routing done and only re-dispatches what is left.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from redis.asyncio import Redis

from blackboard import codec
from blackboard.app import Limits
from blackboard.connection import Command, Pipeliner
from blackboard.errors import ConfigError
from blackboard.keys import GlobalKeys
from blackboard.records import Activation, ContextRead
from blackboard.status import BoardStatus

__all__ = [
    "LocalDispatch",
    "RouteResult",
    "RouteStep",
    "Routing",
    "read_commit_route",
    "read_route",
]


LocalDispatch = Callable[[str, str, str, "Activation | None", "ContextRead | None"], bool]
"""``(board id, activation id, agent, record or None, context or None) -> taken``: hands
an activation to an agent in this process; False if that agent does not run here."""

log = logging.getLogger(__name__)

ACTIVE, ESCALATED = BoardStatus.ACTIVE, BoardStatus.ESCALATED


@dataclass
class Routing:
    """Everything one control step needs to know. Routed with a commit
    (:meth:`RouteStep.commit_and_route`), its ``routing_id`` must be the proposal's id, and
    ``version``, ``compliant`` and ``outcome`` are not sent: the script takes them from
    the commit's result."""

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
    report: str = ""
    """The closed activation's final record (JSON), written as it is closed."""


@dataclass
class RouteResult:
    outcome: str
    """``ok``, ``again`` (already routed) or ``tripped``."""
    status: str = ""
    trip_kind: str = ""
    trip_detail: str = ""
    dispatch: list[tuple[str, str, str]] = field(default_factory=list)
    """(activation id, agent, queue entry JSON) waiting in the outbox."""


def read_route(reply: list[Any]) -> RouteResult:
    """route.lua's reply (see "Returns" in its header), by name."""
    if reply[0] == "tripped":
        _, kind, detail = reply
        return RouteResult("tripped", ESCALATED, kind, detail)
    outcome, status, *rows = reply  # then (activation id, agent, queue entry) triples
    outbox = [(rows[i], rows[i + 1], rows[i + 2]) for i in range(0, len(rows), 3)]
    return RouteResult(outcome, status, dispatch=outbox)


def read_commit_route(
    reply: list[Any], context: Sequence[str]
) -> tuple[list[Any], list[Any] | None, ContextRead | None]:
    """commit_route.lua's reply (see "Returns" in its header), by name: the commit's
    reply, route.lua's (None: the commit did not happen, nothing was routed) and the
    ``context`` keys read with them (None: none asked, or the routing did not go
    through)."""
    if reply[0] == "commit":
        _, commit = reply
        return commit, None, None
    if len(reply) == 3:
        _, commit, routed = reply
        return commit, routed, None
    _, commit, routed, (version, values, loops) = reply
    read = ContextRead(
        version=int(version),
        values=dict(zip(context, values, strict=True)),
        loops=dict(zip(loops[::2], loops[1::2], strict=True)),
    )
    return commit, routed, read


def _lua(name: str) -> str:
    return resources.files("blackboard.supervisor").joinpath("lua", name).read_text()


def _combined() -> str:
    """commit.lua and route.lua, each wrapped as a function, then the driver
    (``lua/commit_route.lua``) that calls them."""
    commit = resources.files("blackboard").joinpath("lua", "commit.lua").read_text()
    return (
        f"local function commit(KEYS, ARGV)\n{commit}\nend\n"
        f"local function route(KEYS, ARGV)\n{_lua('route.lua')}\nend\n"
        f"{_lua('commit_route.lua')}"
    )


class RouteStep:
    """Runs the control step (``lua/route.lua``), alone or with a commit
    (``lua/commit_route.lua``), and dispatches what it activates. Not the app's
    :data:`~blackboard.app.Router`, the user's callback that names who acts next."""

    def __init__(self, redis: Redis, keys: GlobalKeys, limits: Limits) -> None:
        self.redis = redis
        self.keys = keys
        self._limits = " ".join(  # route.lua's ARGV[4], the same in every call
            str(n)
            for n in (
                limits.loop_threshold,
                limits.max_activations,
                limits.max_rewrites,
                limits.max_tokens or 0,
                limits.max_cost or 0,
            )
        )
        self._script = redis.register_script(_lua("route.lua"))
        self.commit_route_script = redis.register_script(_combined())
        """route.lua with a commit (and a context read) in one call."""
        self.pipeliner = Pipeliner(redis)
        self.local: LocalDispatch | None = None
        """Takes activations of agents running in this process (embedded mode)."""

    async def route(
        self,
        board_id: str,
        step: Routing,
        *,
        deadline_ms: int = 0,
        context: Sequence[str] = (),
    ) -> tuple[RouteResult, ContextRead | None]:
        """Run the control step. With ``deadline_ms``, the watchdog is told first, in
        the same round trip: an activation never exists without its deadline watched.
        ``context``: board keys to read for the agents activated (embedded mode)."""
        before = [self.watch(board_id, deadline_ms)] if deadline_ms else []
        if context:
            _, routed, read = await self.commit_and_route(
                board_id, [], [], step, before=before, context=context
            )
            assert routed is not None  # no commit, so nothing can refuse it
            return routed, read
        keys, args = self._call(board_id, step)
        replies = await self.pipeliner.execute(*before, ("script", (self._script, keys, args), {}))
        return await self._parse(board_id, step, replies[-1]), None

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
        self,
        board_id: str,
        commit_keys: list[str],
        commit_args: list[Any],
        step: Routing,
        before: Sequence[Command] = (),
        context: Sequence[str] = (),
    ) -> tuple[list[Any], RouteResult | None, ContextRead | None]:
        """Commit and route atomically; the route result is None if the commit did not
        happen (its reply says why). ``before``: commands sent first in the same round
        trip, whatever the script then does: only what is safe either way (telling the
        watchdog, recording an activation's report; never an ack). ``context``: board
        keys to read for the next agent, atomically with the commit (embedded mode)."""
        call = self.commit_route_call(board_id, commit_keys, commit_args, step, context)
        reply = (await self.pipeliner.execute(*before, call))[-1]
        return await self.commit_route_reply(board_id, step, context, reply)

    def commit_route_call(
        self,
        board_id: str,
        commit_keys: list[str],
        commit_args: list[Any],
        step: Routing,
        context: Sequence[str] = (),
    ) -> Command:
        """:meth:`commit_and_route` as a command, to send with others (a batch of boards
        in one round trip); :meth:`commit_route_reply` reads its reply."""
        if commit_keys and step.routing_id != commit_args[2]:
            raise ConfigError(
                f"routing id {step.routing_id!r} is not the committed proposal's id "
                f"{commit_args[2]!r}: the script routes a commit under its proposal id; "
                "route it with routing_id set to the proposal id."
            )
        keys, args = self._call(board_id, step, committing=bool(commit_keys))
        if commit_keys:  # the script takes route.lua's meta, results and khash from these
            keys = keys[1:7]
        if context:
            keys.append(self.keys.board(board_id).state)
        script = (
            self.commit_route_script,
            [*commit_keys, *keys],
            (*commit_args, *args, *context, len(commit_keys), len(commit_args), len(context)),
        )
        return ("script", script, {})

    async def commit_route_reply(
        self, board_id: str, step: Routing, context: Sequence[str], reply: list[Any]
    ) -> tuple[list[Any], RouteResult | None, ContextRead | None]:
        """:meth:`commit_route_call`'s reply: the commit's reply (as ``commit.lua``
        gives it), the routing's (None if the commit did not happen) and the
        ``context`` read with them."""
        commit, routed, read = read_commit_route(reply, context)
        if routed is None:
            return commit, None, None
        return commit, await self._parse(board_id, step, routed), read

    def _call(
        self, board_id: str, step: Routing, *, committing: bool = False
    ) -> tuple[list[str], list[Any]]:
        """route.lua's KEYS and ARGV; ``committing``: without the four ARGV the
        commit_route driver fills in from the commit (see lua/commit_route.lua)."""
        bk = self.keys.board(board_id)
        args: list[Any] = [] if committing else [step.routing_id, step.version]
        args += [
            int(time.time() * 1000),
            self._limits,
            step.tokens,
            repr(float(step.cost)),
            step.reset_rewrite,
            step.rewrite,
            step.status,
            step.close,
            len(step.pairs),
            *step.pairs,
            len(step.activations),
        ]
        for act in step.activations:
            entry = codec.dumps(
                {"agent": act.agent, "board": board_id, "activation": act.activation_id}
            )
            args += [act.activation_id, act.agent, act.deadline_ms, act.model_dump_json(), entry]
        args += [step.escalate, step.report]
        if not committing:
            args += ["1" if step.compliant else "0", step.outcome]
        return list(bk.route), args

    async def _parse(self, board_id: str, step: Routing, reply: list[Any]) -> RouteResult:
        result = read_route(reply)
        if result.outcome == "tripped":
            log.warning(
                "board %s escalated: %s: %s",
                board_id,
                result.trip_kind,
                result.trip_detail,
                extra={"board": board_id, "version": step.version},
            )
            await self.redis.zadd(self.keys.escalations, {board_id: time.time() * 1000})
        return result

    async def dispatch(
        self,
        board_id: str,
        result: RouteResult,
        *,
        ack: tuple[str, str, str] | None = None,
        outgoing: list[Command] | None = None,
        fresh: Sequence[Activation] = (),
        context: ContextRead | None = None,
    ) -> None:
        """Move outbox entries to agent queues (if the board is active), then
        acknowledge the submission's stream entry. With ``outgoing``, the commands are
        collected and sent once for the whole consumer batch (:meth:`flush`); either way
        each submission's ack follows its dispatch, and Redis runs a pipeline in order.

        An activation of an agent running in this process (:attr:`local`) is handed to
        it directly and stays in the outbox until it is closed, so a crash of this
        process leaves it there to be recovered. ``fresh``: the activation records this
        step just created, and ``context`` the board as the next agent sees it (read
        with the commit), so the local agent need not read them back."""
        commands: list[Command] = outgoing if outgoing is not None else []
        if result.status == ACTIVE:
            bk = self.keys.board(board_id)
            records = {a.activation_id: a for a in fresh}
            for activation_id, agent, entry in result.dispatch:
                if self.local is not None and self.local(
                    board_id, activation_id, agent, records.get(activation_id), context
                ):
                    continue
                commands.append(("xadd", (self.keys.queue(agent), codec.loads(entry)), {}))
                commands.append(("hdel", (bk.outbox, activation_id), {}))
        if ack is not None:
            commands.append(("xack", ack, {}))
        if outgoing is None:
            for error in await self.flush(commands):
                raise error  # what did not go stays in the outbox (resume dispatches it)

    def watch(self, board_id: str, deadline_ms: int) -> Command:
        """The command that makes the watchdog look at the board by ``deadline_ms``."""
        return ("zadd", (self.keys.watch, {board_id: deadline_ms}), {"lt": True})

    async def flush(self, commands: list[Command]) -> list[Exception]:
        """Send what :meth:`dispatch` collected: the dispatches first, then, for each one
        Redis took, its outbox entry removed, and the acks (one XACK per stream) of the
        submissions all of whose dispatches went through. A dispatch Redis refused (out
        of memory, say) keeps its outbox entry and leaves its submission pending:
        redelivered, its routing hands the outbox back and the dispatch is tried again.
        One round trip when nothing is dispatched, two otherwise; shared with any other
        task's commands in the same turn of the event loop. Returns the error replies."""
        if not commands:
            return []
        collected, commands[:] = list(commands), []
        sends = [c for c in collected if c[0] == "xadd"]
        sent = await self.pipeliner.execute(*sends, raise_on_error=False) if sends else []
        taken = iter(sent)
        after: list[Command] = []
        acks: dict[tuple[str, str], list[str]] = {}
        went = True  # the dispatch just before (an outbox entry follows its dispatch)
        all_went = True  # the current submission's dispatches (its ack follows them)
        for name, args, kwargs in collected:
            if name == "xadd":
                went = not isinstance(next(taken), Exception)
                all_went = all_went and went
            elif name == "hdel":
                if went:
                    after.append((name, args, kwargs))
            elif name == "xack":
                stream, group, *ids = args
                if all_went:
                    acks.setdefault((stream, group), []).extend(ids)
                all_went = True
            else:
                after.append((name, args, kwargs))
        after += [("xack", (stream, group, *ids), {}) for (stream, group), ids in acks.items()]
        replies = await self.pipeliner.execute(*after, raise_on_error=False) if after else []
        return [r for r in [*sent, *replies] if isinstance(r, Exception)]
