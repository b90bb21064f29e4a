"""Validating a proposal, in order: well-formed and within limits; the author owns every
key it touches (ownership from the stored declaration, never from the proposal); values
validate against the keys' types; every policy passes on the resulting board; no gate
holds it. Then the atomic commit, retried on conflict by re-validating on fresh state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Literal

from blackboard.supervisor.summarisation import OnTop, check_summary
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
)

from blackboard.app import App, verdict
from blackboard.errors import ConflictError, ProposalRejected, ValidationFailed
from blackboard.patch import is_blind
from blackboard.records import CommitKind, CommitResult, Proposal
from blackboard.store import BoardStore

__all__ = ["Decision", "Validator"]

log = logging.getLogger(__name__)


class PolicyViolation(ProposalRejected):
    """A policy failed on the board the proposal would produce."""

    reason = "policy"


@dataclass
class Decision:
    """What validation decided about one proposal."""

    status: Literal["committed", "rejected", "held"]
    commit: CommitResult | None = None
    reason: str = ""
    message: str = ""
    gate: str = ""
    view: dict[str, Any] = field(default_factory=dict)


class Validator:
    """Validates and commits proposals for one app."""

    def __init__(
        self, app: App, store: BoardStore, *, attempts: int = 5, summary_attempts: int = 20
    ) -> None:
        self.app = app
        self.store = store
        self.attempts = attempts
        self.summary_attempts = summary_attempts
        self._policy_reads = sorted({k for p in app.policies for k in p.reads})
        self._gate_reads = sorted({k for g in app.gates for k in g.reads})

    async def decide(
        self,
        board_id: str,
        proposal: Proposal,
        *,
        kind: CommitKind = "write",
        gates: bool = True,
        depends_on: list[str] | None = None,
        summarises: str | None = None,
    ) -> Decision:
        """Validate and commit, or reject, or hold.

        A proposal is *stale* if a key it writes or depends on (its ``reads``, which
        default to the keys its agent reads) changed after its base: it is rejected as a
        conflict and the agent recomputes. Otherwise it is rebased on the current
        version, policies re-run on fresh state, and committed with every key involved in
        the read set; a commit that races another is retried from the top (bounded).

        ``summarises``: with ``kind="summary"``, the summarisable key the summary was
        activated for, the only key it may write; a summary is moved on top of what was
        appended to that key after its base (:class:`OnTop`), its races retried (up
        to ``summary_attempts`` times: a busy writer of the key races it often).
        """
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(_Raced),
            stop=stop_after_attempt(self.attempts),
            reraise=True,
        )
        on_top = None
        if summarises is not None:
            on_top = OnTop(self.store, board_id, proposal, summarises)
            retrying = retrying.copy(
                retry=retry_if_exception(
                    lambda exc: isinstance(exc, _Raced) and on_top.may_retry(exc.conflict)
                ),
                stop=stop_after_attempt(self.summary_attempts),
            )
        try:
            if summarises is not None:
                check_summary(self.app, proposal, summarises)
            async for attempt in retrying:
                with attempt:
                    if on_top is not None:
                        proposal = await on_top.proposal()
                    return await self._once(board_id, proposal, kind, gates, depends_on or [])
        except _Raced as raced:
            return _rejected(raced.conflict)
        except ProposalRejected as exc:
            return _rejected(exc)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _once(
        self,
        board_id: str,
        proposal: Proposal,
        kind: CommitKind,
        gates: bool,
        depends_on: list[str],
    ) -> Decision:
        if not self.app.policies and not (gates and self.app.gates) and is_blind(proposal.patch):
            # Nothing to evaluate on the resulting board: the commit script itself checks
            # that nothing written or depended on changed after the base (stale = conflict).
            reads = [*dict.fromkeys([*proposal.reads, *depends_on])]
            try:
                commit = await self.store.commit(
                    board_id,
                    proposal.model_copy(update={"reads": reads}),
                    kind=kind,
                    outcome="policies:none",
                )
            except ConflictError as exc:
                if kind == "summary":  # moved on top of the key as it is now, again
                    raise _Raced(exc) from exc
                raise
            return Decision("committed", commit=commit)
        extra = [*self._policy_reads, *(self._gate_reads if gates else []), *depends_on]
        preview = await self.store.preview(board_id, proposal, extra=extra, kind=kind)
        if preview.duplicate_of is not None:
            commit = CommitResult(
                board_id=board_id,
                version=preview.duplicate_of,
                duplicate=True,
                keys=preview.duplicate_keys,
            )
            return Decision("committed", commit=commit, view=preview.view)
        dependencies = [
            *dict.fromkeys([*preview.writes, *preview.reads, *proposal.reads, *depends_on])
        ]
        stale = {k: preview.kvers[k] for k in dependencies if preview.kvers[k] > proposal.base}
        if stale:
            conflict = ConflictError(board_id, proposal.base, stale)
            if kind == "summary":  # moved on top of the key as it is now, again
                raise _Raced(conflict)
            raise conflict
        self._check_policies(preview.view)
        if gates:
            held = self._gate(preview.view, preview.writes)
            if held is not None:
                return Decision(
                    "held",
                    gate=held.name,
                    view=preview.view,
                    message=held.message or f"held by gate {held.name!r}",
                )
        rebased = proposal.model_copy(
            update={
                "base": preview.version,
                "reads": [*dict.fromkeys([*dependencies, *self._policy_reads])],
            }
        )
        outcome = "policies:" + (",".join(p.name for p in self.app.policies) or "none")
        try:
            commit = await self.store.commit(board_id, rebased, kind=kind, outcome=outcome)
        except ConflictError as exc:
            raise _Raced(exc) from exc
        return Decision("committed", commit=commit, view=preview.view)

    def _check_policies(self, view: dict[str, Any]) -> None:
        for policy in self.app.policies:
            try:
                failed = verdict(
                    policy.check(view), policy.message or f"policy {policy.name!r} is not satisfied"
                )
            except Exception as exc:  # a user's check must not take the supervisor down
                failed = f"policy {policy.name!r} raised {type(exc).__name__}: {exc}"
            if failed:
                raise PolicyViolation(
                    f"{failed} (policy {policy.name!r} over {', '.join(policy.reads)}). "
                    "Propose values that satisfy it."
                )

    def _gate(self, view: dict[str, Any], writes: list[str]) -> Any:
        updates = {k: view.get(k) for k in writes}
        for gate in self.app.gates:
            if gate.when(updates, view):
                return gate
        return None


class _Raced(Exception):
    """The commit lost a race after validation: validate again on fresh state."""

    def __init__(self, conflict: ConflictError) -> None:
        super().__init__(str(conflict))
        self.conflict = conflict


def _rejected(exc: ProposalRejected) -> Decision:
    reason = exc.reason
    if isinstance(exc, ValidationFailed) and exc.rule.startswith("type"):
        reason = "schema"
    return Decision("rejected", reason=reason, message=str(exc))
