"""The commit protocol: how one proposal becomes one atomic commit.

Every change goes through one server-side script (``lua/commit.lua``): it re-checks
per-key versions of the keys written and read (serializable commits: no lost update, no
write skew), writes only the changed keys, bumps the version, appends the log entry,
records the proposal id, keeps size accounting and snapshots, and publishes an event.
Before it, :meth:`Committer.prepare` validates (patch shape, declared keys, ownership,
types, size limits) and computes the script's KEYS and ARGV; after it,
:meth:`Committer.finish` turns the reply into a result or a typed rejection. A
rejected proposal changes nothing. ``BoardStore.commit`` is ``prepare``, :meth:`run`
and ``finish`` in a row; the supervisor runs the parts itself, to send the commit and
its routing as one script.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from typing import Any, cast, get_args

from redis.asyncio import Redis

from blackboard import codec
from blackboard import patch as patches
from blackboard.config import Settings
from blackboard.connection import Command
from blackboard.declarations import Declarations
from blackboard.errors import (
    AlreadyDecided,
    BoardStopped,
    ConfigError,
    ConflictError,
    OwnershipError,
    ProposalRejected,
    ValidationFailed,
    redis_failures,
)
from blackboard.keys import GlobalKeys
from blackboard.records import CommitKind, CommitResult, Preview, Proposal, ProposalFields
from blackboard.schema import BoardSchema

__all__ = ["Committer", "PreparedCommit", "check_version", "lua"]

log = logging.getLogger(__name__)

_COMMIT_KINDS: tuple[str, ...] = get_args(CommitKind)
_COMMITTED = "a value of the board being committed to"  # (no message built per commit)

Write = tuple[str, str, str]
"""One key the script writes: (key, ``set`` / ``replace`` / ``remove``, JSON value)."""


def lua(name: str) -> str:
    """The text of one of this package's scripts (``blackboard/lua/<name>``)."""
    return resources.files("blackboard").joinpath("lua", name).read_text()


def check_version(board_id: str, at: int, current: int) -> None:
    """Refuse a version the board does not have (``0..current``)."""
    if not 0 <= at <= current:
        raise ValidationFailed(
            f"board {board_id!r} has versions 0..{current}; version {at} does not exist.",
            rule="version",
            expected=f"0 <= version <= {current}",
        )


@dataclass(frozen=True)
class PreparedCommit:
    """The commit script's KEYS and ARGV for one validated proposal (see ``prepare``)."""

    keys: list[str]
    args: list[Any]


class Committer:
    """Commits to the boards of one store.

    Args:
        redis: the store's client.
        settings: limits (value and patch bytes), snapshots, replicas to wait for.
        keys: the store's key names.
        declarations: the store's schemas, to validate with.
    """

    def __init__(
        self, redis: Redis, settings: Settings, keys: GlobalKeys, declarations: Declarations
    ) -> None:
        self.redis = redis
        self.settings = settings
        self.declarations = declarations
        self._global = keys
        self.script = redis.register_script(lua("commit.lua"))
        """The registered commit script; tests wrap it to inject a race before it runs."""

    # -- validation -------------------------------------------------------------------

    def checked_value(self, schema: BoardSchema, key: str, value: Any) -> str:
        """``value`` as the JSON stored for ``key``, once it passes the size limit and
        the key's type."""
        text = codec.dumps(value)
        limit = self.settings.max_value_bytes
        if (size := codec.utf8_len(text)) > limit:
            raise ValidationFailed(
                f"value of key {key!r} is {size} bytes, over the "
                f"{limit}-byte limit (max_value_bytes). Store less (summarise, or keep a "
                "reference to the data instead of the data).",
                key=key,
                rule="max_value_bytes",
                expected=f"<= {limit} bytes",
            )
        schema.validate_json(key, text)
        return text

    @staticmethod
    def check_author(schema: BoardSchema, author: str, keys: Iterable[str]) -> None:
        """Refuse a write by anyone but the owner of every key written."""
        keys = tuple(keys)
        if keys and all(schema.owner(k) == author for k in keys):
            return  # the common case, without building the ownership map
        owned = schema.owners()
        if author not in owned:
            raise OwnershipError(
                f"author {author!r} owns no key of board schema {schema.name}; known "
                f"authors are {', '.join(sorted(owned))}. Propose as the agent that owns "
                "the key.",
                author=author,
            )
        for key in keys:
            if schema.owner(key) != author:
                raise OwnershipError(
                    f"author {author!r} may not write key {key!r}: it is owned by "
                    f"{schema.owner(key)!r}. Write only your own keys, or hand off to "
                    "its owner.",
                    author=author,
                    key=key,
                )

    # -- the protocol -----------------------------------------------------------------

    async def run(
        self, board_id: str, proposal: ProposalFields, call: PreparedCommit
    ) -> CommitResult:
        """Run the commit script (with WAIT after it if asked) and read its reply."""
        acked = None
        async with redis_failures(f"commit to board {board_id!r}"):
            if not self.settings.wait_replicas:
                reply = await self.script(keys=call.keys, args=call.args)
            else:  # WAIT counts replicas that have this connection's writes: send it
                # on the connection that ran the script, right after it
                pipe = self.redis.pipeline(transaction=False)
                await self.script(keys=call.keys, args=call.args, client=pipe)
                pipe.execute_command(*self.wait_command())
                reply, acked = await pipe.execute()
        return await self.finish(board_id, proposal, reply, replicas=acked)

    async def prepare(
        self, board_id: str, proposal: ProposalFields, kind: CommitKind, outcome: str
    ) -> PreparedCommit | CommitResult:
        """The script call for a valid proposal (see ``BoardStore.prepare``; the
        defaults are the store's)."""
        if kind not in _COMMIT_KINDS:
            raise ConfigError(
                f"unknown commit kind {kind!r}; use one of {', '.join(_COMMIT_KINDS)}."
            )
        schema = await self.declarations.schema_for(board_id)
        patch_text = codec.dumps(proposal.patch)
        if (size := codec.utf8_len(patch_text)) > self.settings.max_patch_bytes:
            raise ValidationFailed(
                f"patch is {size} bytes, over the "
                f"{self.settings.max_patch_bytes}-byte limit (max_patch_bytes). Split it "
                "or store less.",
                rule="max_patch_bytes",
                expected=f"<= {self.settings.max_patch_bytes} bytes",
            )
        plan = patches.plan(proposal.patch, schema)
        if kind == "write":
            self.check_author(schema, proposal.author, plan.writes)
        reads = [schema.check_key(k).name for k in proposal.reads]
        if plan.blind:
            writes = []
            for op in plan.ops:
                key = op["path"][1:]
                if op["op"] == "remove":
                    writes.append((key, "remove", ""))
                else:
                    action = "set" if op["op"] == "add" else "replace"
                    writes.append((key, action, self.checked_value(schema, key, op["value"])))
            undo = ""
        else:
            applied = await self._apply(board_id, schema, proposal, plan)
            if isinstance(applied, CommitResult):
                return applied
            writes, unchanged, undo = applied
            reads += unchanged
        return self.call(
            board_id,
            schema,
            proposal,
            kind,
            outcome,
            patch_text,
            writes,
            # Every key involved but not sent as a write is re-checked by the script,
            # including written keys whose value turned out unchanged.
            [*dict.fromkeys(k for k in [*reads, *plan.reads] if k not in {w[0] for w in writes})],
            undo,
        )

    async def finish(
        self,
        board_id: str,
        proposal: ProposalFields,
        reply: list[Any],
        *,
        replicas: int | None = None,
    ) -> CommitResult:
        """The script's reply as a result or a typed rejection (``BoardStore.finish``)."""
        result = await self._answer(board_id, proposal, reply)
        if self.settings.wait_replicas and not result.duplicate:
            if replicas is None:
                raise ConfigError(
                    "wait_replicas is set but no WAIT reply was given: send wait_command() "
                    "after the commit script, on its connection, and pass its reply."
                )
            result.replicas = self._replicated(board_id, result.version, int(replicas))
        return result

    def commit_command(self, prepared: PreparedCommit) -> Command:
        """The script call to send with others (see ``BoardStore.commit_command``)."""
        return ("script", (self.script, prepared.keys, prepared.args), {})

    def wait_command(self) -> tuple[str, int, int]:
        """The WAIT for ``Settings.wait_replicas`` (see ``BoardStore.wait_command``)."""
        return ("WAIT", self.settings.wait_replicas, self.settings.wait_timeout_ms)

    async def preview(
        self,
        board_id: str,
        proposal: Proposal,
        *,
        extra: Iterable[str] = (),
        kind: CommitKind = "write",
    ) -> Preview:
        """The board as it would be after ``proposal``, limited to the keys it touches,
        reads and ``extra`` (see ``BoardStore.preview``)."""
        schema = await self.declarations.schema_for(board_id)
        plan = patches.plan(proposal.patch, schema)
        if kind == "write":
            self.check_author(schema, proposal.author, plan.writes)
        wanted = [*dict.fromkeys([*plan.writes, *plan.reads, *proposal.reads, *extra])]
        for key in wanted:
            schema.check_key(key)
        version, values, kvers, earlier = await self._fetch(board_id, wanted, proposal)
        before = {
            k: codec.loads(v, _COMMITTED)
            for k, v in zip(wanted, values, strict=True)
            if v is not None
        }
        touched = {k: before[k] for k in [*plan.writes, *plan.reads] if k in before}
        after = patches.apply_to(plan.ops, touched)
        view = {k: v for k, v in before.items() if k not in plan.writes}
        for key in plan.writes:
            if key in after:
                self.checked_value(schema, key, after[key])
                view[key] = after[key]
        return Preview(
            version=int(version),
            kvers={k: int(v or 0) for k, v in zip(wanted, kvers, strict=True)},
            view=view,
            writes=list(plan.writes),
            reads=list(plan.reads),
            duplicate_of=None if earlier is None else int(earlier),
            duplicate_keys=[]
            if earlier is None
            else (await self._duplicate(board_id, int(earlier))).keys,
        )

    async def record_noop(
        self, board_id: str, proposal: Proposal, *, kind: CommitKind, outcome: str
    ) -> CommitResult:
        """Record ``proposal`` (an empty patch) in the log as a commit that changed
        nothing (a rollback to identical content, say); its ``reads`` are still checked."""
        schema = await self.declarations.schema_for(board_id)
        call = self.call(board_id, schema, proposal, kind, outcome, "[]", [], proposal.reads, "[]")
        return await self.run(board_id, proposal, call)

    def call(
        self,
        board_id: str,
        schema: BoardSchema,
        proposal: ProposalFields,
        kind: CommitKind,
        outcome: str,
        patch_text: str,
        writes: list[Write],
        reads: list[str],
        undo: str,
    ) -> PreparedCommit:
        """The script's KEYS and ARGV for writes already validated and computed (the
        order is ``lua/commit.lua``'s header)."""
        keys = self._global.board(board_id)
        args: list[Any] = [
            schema.digest,
            proposal.base,
            proposal.proposal_id,
            self.settings.snapshot_min_bytes,
            keys.events,
            len(writes),
            len(reads),
            proposal.author,
            codec.dumps(proposal.author),
            kind,
            patch_text,
            undo,
            proposal.activation_id,
            proposal.trace_id,
            proposal.reason,
            outcome,
            board_id,
        ]
        for key, action, value in writes:
            args += [
                key,
                action,
                value,
                codec.fingerprint(value) if value else "",
            ]
        args.extend(reads)
        return PreparedCommit(keys=list(keys.commit), args=args)

    # -- steps ------------------------------------------------------------------------

    async def _duplicate(self, board_id: str, version: int) -> CommitResult:
        """The answer to a proposal id that already committed: its version and keys."""
        log_key = self._global.board(board_id).log
        rows = await self.redis.xrange(log_key, f"{version}-0", f"{version}-0")
        keys = cast("list[tuple[str, dict[str, str]]]", rows)[0][1].get("keys", "") if rows else ""
        return CommitResult(
            board_id=board_id, version=version, duplicate=True, keys=keys.split(",") if keys else []
        )

    async def _fetch(
        self, board_id: str, names: list[str], proposal: ProposalFields
    ) -> tuple[str, list[str | None], list[str | None], str | None]:
        """One consistent read: version, values and key versions of ``names``, and the
        version this proposal id committed as (if it did)."""
        keys = self._global.board(board_id)
        async with redis_failures(f"read board {board_id!r}"):
            pipe = self.redis.pipeline(transaction=True)
            pipe.hget(keys.meta, "version")
            pipe.hmget(keys.state, names)
            pipe.hmget(keys.kver, names)
            pipe.hget(keys.committed, proposal.proposal_id)
            version, values, kvers, earlier = await pipe.execute()
        if version is None:
            raise await self.declarations.not_found(board_id)
        return version, values, kvers, earlier

    async def _apply(
        self, board_id: str, schema: BoardSchema, proposal: ProposalFields, plan: patches.PatchPlan
    ) -> tuple[list[Write], list[str], str] | CommitResult:
        """Apply a non-blind patch to the current values of the keys it touches.

        Returns the writes, or the earlier commit if this proposal id already committed
        (checked first: a redelivered proposal must not turn into a conflict)."""
        touched = [*plan.writes, *plan.reads]
        version, values, kvers, earlier = await self._fetch(board_id, touched, proposal)
        if earlier is not None:
            return await self._duplicate(board_id, int(earlier))
        if proposal.base > int(version):
            check_version(board_id, proposal.base, int(version))
        changed = {
            k: int(v) for k, v in zip(touched, kvers, strict=True) if v and int(v) > proposal.base
        }
        if changed:
            raise ConflictError(board_id, proposal.base, changed)
        before = {
            k: codec.loads(v, _COMMITTED)
            for k, v in zip(touched, values, strict=False)
            if v is not None
        }
        after = patches.apply_to(plan.ops, before)
        writes: list[Write] = []
        unchanged: list[str] = []
        old_texts = dict(zip(touched, values, strict=False))
        for key in plan.writes:
            if key not in after:
                if key in before:
                    writes.append((key, "remove", ""))
                else:  # unset before and after (e.g. add then remove): no change
                    unchanged.append(key)
                continue
            text = self.checked_value(schema, key, after[key])
            if text == old_texts[key]:
                unchanged.append(key)
            else:
                writes.append((key, "set", text))
        changed_keys = [k for k, _, _ in writes]
        undo = patches.inverse(
            {k: before[k] for k in changed_keys if k in before},
            {k: after[k] for k in changed_keys if k in after},
        )
        return writes, unchanged, codec.dumps(undo)

    def _replicated(self, board_id: str, version: int, acked: int) -> int:
        wanted = self.settings.wait_replicas
        if acked < wanted:
            log.warning(
                "commit acknowledged by %d of %d replicas within %d ms",
                acked,
                wanted,
                self.settings.wait_timeout_ms,
                extra={"board": board_id, "version": version},
            )
        return acked

    async def _answer(
        self, board_id: str, proposal: ProposalFields, reply: list[Any]
    ) -> CommitResult:
        status = reply[0]
        if status == "ok":
            if log.isEnabledFor(logging.DEBUG):  # not building the record's fields otherwise
                log.debug(
                    "commit",
                    extra={
                        "board": board_id,
                        "version": int(reply[1]),
                        "author": proposal.author,
                        "trace": proposal.trace_id,
                    },
                )
            return CommitResult(
                board_id=board_id,
                version=int(reply[1]),
                snapshot=bool(reply[2]),
                keys=list(reply[3:]),
            )
        if status == "dup":
            return CommitResult(
                board_id=board_id, version=int(reply[1]), duplicate=True, keys=list(reply[2:])
            )
        if status == "conflict":
            changed = {reply[i]: int(reply[i + 1]) for i in range(1, len(reply), 2)}
            raise ConflictError(board_id, proposal.base, changed)
        if status == "missing":
            raise ValidationFailed(
                f"cannot {reply[2]} key {reply[1]!r}: it is not set on board {board_id!r}. "
                "Use 'add' to set a key that may be unset.",
                key=reply[1],
                rule="json_patch",
                expected="add for an unset key",
            )
        if status == "ahead":
            check_version(board_id, proposal.base, int(reply[1]))
        if status == "decided":
            raise AlreadyDecided(
                f"proposal {proposal.proposal_id} on board {board_id!r} was "
                "already decided by the supervisor; see its recorded outcome."
            )
        if status == "stopped":
            raise BoardStopped(
                f"board {board_id!r} is {reply[1]}; it accepts no writes until an "
                "operator resumes it."
            )
        if status == "archived":
            raise ProposalRejected(
                f"board {board_id!r} is archived and accepts no commits; "
                "create a new board to continue the case."
            )
        self.declarations.forget(board_id)
        if status == "decl":
            raise ConfigError(
                f"board {board_id!r} was re-declared (digest {reply[1]}) "
                "since this process read it; reload the board's schema."
            )
        raise await self.declarations.not_found(board_id)
