"""Every Redis key name this package uses, in one place.

All keys of one board carry the hash tag ``{<board-id>}``, so a board lives in one
Redis Cluster slot and its commit script is cluster-legal. Global keys (the board
indexes) carry no board tag and are never touched by a board's scripts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property

from blackboard.errors import ConfigError

__all__ = [
    "BOARD_ID",
    "BOARD_ID_PATTERN",
    "NAME_PATTERN",
    "BoardKeys",
    "GlobalKeys",
    "check_board_id",
    "check_name",
]

BOARD_ID = r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}"
"""What a board id may be. Always matched whole (``fullmatch``): ``$`` also matches
before a final newline, and the scripts write ids and names into JSON unescaped."""
BOARD_ID_PATTERN = re.compile(BOARD_ID)
NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
"""What an agent, owner or tool name may be (matched whole): names become parts of
Redis keys and consumer names."""


def check_board_id(board_id: str) -> str:
    """Board ids become part of key names and hash tags: keep them plain."""
    if not isinstance(board_id, str) or not BOARD_ID_PATTERN.fullmatch(board_id):
        raise ConfigError(
            f"invalid board id {board_id!r}: use 1-128 characters from letters, digits "
            "and _ . : - (starting with a letter or digit)."
        )
    return board_id


def check_name(kind: str, name: str) -> str:
    """Agent and tool names become parts of Redis keys: keep them plain."""
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise ConfigError(
            f"invalid {kind} name {name!r}: use 1-64 characters from letters, digits and "
            "_ . - (starting with a letter or _)."
        )
    return name


@dataclass(frozen=True)
class BoardKeys:
    """The keys of one board (each name built once: a commit names a dozen)."""

    prefix: str
    board_id: str

    def _k(self, suffix: str) -> str:
        return f"{self.prefix}:{{{self.board_id}}}:{suffix}"

    @cached_property
    def meta(self) -> str:
        """Hash: version, status, compliant, decl, bytes, tokens, created, updated, …"""
        return self._k("meta")

    @cached_property
    def state(self) -> str:
        """Hash: board key -> JSON value (only keys that are set)."""
        return self._k("state")

    @cached_property
    def kver(self) -> str:
        """Hash: board key -> version of its last change (absent = 0)."""
        return self._k("kver")

    @cached_property
    def khash(self) -> str:
        """Hash: board key -> short hash of its JSON value (content fingerprints)."""
        return self._k("khash")

    @cached_property
    def log(self) -> str:
        """Stream: one entry per commit, entry id ``<version>-0``."""
        return self._k("log")

    @cached_property
    def committed(self) -> str:
        """Hash: proposal id -> version it committed as (idempotency). Stored under the
        suffix ``proposals``, its name before ``submissions`` took that word."""
        return self._k("proposals")

    @cached_property
    def snapshots(self) -> str:
        """Hash: version -> JSON object of the whole board at that version."""
        return self._k("snaps")

    @cached_property
    def snapshot_index(self) -> str:
        """Sorted set of snapshot versions (score = version)."""
        return self._k("snapidx")

    @cached_property
    def declaration(self) -> str:
        """String: the board's declaration as JSON (JSON Schema + ownership)."""
        return self._k("decl")

    @cached_property
    def events(self) -> str:
        """Pub/sub channel announcing each commit."""
        return self._k("events")

    # -- the supervisor's per-board state (same slot as the board) --------------------

    @cached_property
    def results(self) -> str:
        """Hash: proposal id -> JSON outcome (committed / rejected / held / failed)."""
        return self._k("results")

    @cached_property
    def activations(self) -> str:
        """Hash: activation id -> JSON activation record (the envelope)."""
        return self._k("acts")

    @cached_property
    def open(self) -> str:
        """Sorted set: open activation id -> deadline (ms)."""
        return self._k("open")

    @cached_property
    def outbox(self) -> str:
        """Hash: activation id -> queue entry JSON not yet dispatched to its agent."""
        return self._k("outbox")

    @cached_property
    def loops(self) -> str:
        """Hash: handoff counters ('a>b' -> 'fingerprint|count'), rewrite counters, and
        summarised content hashes."""
        return self._k("loops")

    @cached_property
    def routed(self) -> str:
        """Hash: proposal id -> 1 once its routing step ran (idempotency)."""
        return self._k("routed")

    @cached_property
    def passed(self) -> str:
        """Sorted set: versions whose audits passed and whose content no rollback
        dropped (score = version): the candidates for an audit rollback's target."""
        return self._k("passed")

    @cached_property
    def claims(self) -> str:
        """Hash: an audit rollback's proposal id -> 'target|audit|message', decided once
        (see ``supervisor/lua/audit.lua``)."""
        return self._k("claims")

    @cached_property
    def held(self) -> str:
        """Hash: proposal id -> proposal JSON held by a gate."""
        return self._k("held")

    @cached_property
    def incidents(self) -> str:
        """Stream: loops tripped, budgets spent, timeouts, gates, audits, rollbacks."""
        return self._k("incidents")

    @cached_property
    def tool_results(self) -> str:
        """Hash: idempotency key -> first result of a side-effect tool call."""
        return self._k("tools")

    def tool_claim(self, key: str) -> str:
        """String with a TTL: the lease of the caller running one tool call."""
        return self._k(f"toolclaim:{key}")

    @property
    def archiving(self) -> str:
        """String with a TTL: a supervisor replica is archiving the board (one at once)."""
        return self._k("archiving")

    @cached_property
    def saga(self) -> str:
        """List: compensations of successful side-effect calls, oldest first."""
        return self._k("saga")

    @cached_property
    def commit(self) -> tuple[str, ...]:
        """The commit script's KEYS, in its order (see ``lua/commit.lua``)."""
        return (
            self.meta,
            self.state,
            self.kver,
            self.log,
            self.committed,
            self.snapshots,
            self.snapshot_index,
            self.khash,
            self.results,
        )

    @cached_property
    def route(self) -> tuple[str, ...]:
        """The supervisor's routing script's KEYS, in its order (see its ``route.lua``)."""
        return (
            self.meta,
            self.loops,
            self.routed,
            self.activations,
            self.open,
            self.outbox,
            self.incidents,
            self.results,
            self.khash,
        )

    def all(self) -> list[str]:
        """Every stored key of the board (for delete)."""
        return [
            self.meta,
            self.state,
            self.kver,
            self.khash,
            self.log,
            self.committed,
            self.snapshots,
            self.snapshot_index,
            self.declaration,
            self.results,
            self.activations,
            self.open,
            self.outbox,
            self.loops,
            self.routed,
            self.passed,
            self.claims,
            self.held,
            self.incidents,
            self.tool_results,
            self.saga,
        ]


@dataclass(frozen=True)
class GlobalKeys:
    """Keys shared by all boards of one prefix."""

    prefix: str
    _boards: dict[str, BoardKeys] = field(default_factory=dict, compare=False, repr=False)

    @property
    def boards(self) -> str:
        """Sorted set of live board ids, score = creation time in ms."""
        return f"{self.prefix}:boards"

    @property
    def archived(self) -> str:
        """Sorted set of archived board ids, score = archive time in ms."""
        return f"{self.prefix}:archived"

    def submissions(self, agent: str, shard: int) -> str:
        """Stream of one agent's submissions to the supervisor (one per agent and shard):
        its author is the stream, which only that agent's Redis user may append to."""
        return f"{self.prefix}:sub:{agent}:{shard}"

    def reports(self, shard: int) -> str:
        """Stream of the supervisor's own reports to itself (activations its watchdog
        saw time out): only the supervisor's Redis user may append to it."""
        return f"{self.prefix}:sup:{shard}"

    def commands(self, shard: int) -> str:
        """Stream of operators' commands to the supervisor (only the operator's Redis
        user may append to it)."""
        return f"{self.prefix}:ops:{shard}"

    def queue(self, agent: str) -> str:
        """Stream of activations for one agent (its instances share a consumer group)."""
        return f"{self.prefix}:queue:{agent}"

    @property
    def dead_letters(self) -> str:
        """Stream of entries that failed too many deliveries, with the reason."""
        return f"{self.prefix}:dlq"

    @property
    def escalations(self) -> str:
        """Sorted set: board id -> time it was escalated or held for approval (ms)."""
        return f"{self.prefix}:escalations"

    @property
    def watch(self) -> str:
        """Sorted set: board id -> earliest deadline to check (activations, board)."""
        return f"{self.prefix}:watch"

    def rate(self, tool: str) -> str:
        """Sorted set: recent call times of a rate-limited tool (all processes)."""
        return f"{self.prefix}:rate:{tool}"

    def breaker(self, tool: str) -> str:
        """Hash: a tool's circuit breaker (consecutive errors, open until)."""
        return f"{self.prefix}:breaker:{tool}"

    def live(self, consumer: str) -> str:
        """String with a short TTL: present while the process consuming as ``consumer``
        beats (see :class:`~blackboard.queues.Liveness`)."""
        return f"{self.prefix}:live:{consumer}"

    @property
    def consumers(self) -> str:
        """Sorted set: consumer names that beat -> time of their last beat (ms). A member
        whose :meth:`live` key is gone is dead: its pending entries are taken over."""
        return f"{self.prefix}:consumers"

    @property
    def app(self) -> str:
        """String: the app declaration the supervisor published (JSON)."""
        return f"{self.prefix}:app"

    def board(self, board_id: str) -> BoardKeys:
        keys = self._boards.get(board_id)
        if keys is None:
            keys = BoardKeys(self.prefix, check_board_id(board_id))
            if len(self._boards) >= 10_000:  # bounded: a long-lived process sees many boards
                self._boards.clear()
            self._boards[board_id] = keys
        return keys
