"""Validating a proposal, in order: well-formed and within limits; the author owns every
key it touches (ownership from the stored declaration, never from the proposal); values
validate against the keys' types; every policy passes on the resulting board; no gate
holds it. Then the atomic commit, retried on conflict by re-validating on fresh state
(:class:`Validator`). Deciding a submission (:class:`Decider`) adds what comes around
that: its handoff is checked first, a held proposal waits for a person, and the audits
run on the committed version, a failed one rolling the board back.
"""

from __future__ import annotations

import inspect
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from blackboard.supervisor.compliance import Compliance, Dropped
from blackboard.supervisor.incidents import Incidents
from blackboard.supervisor.summarisation import OnTop, check_summary
from tenacity import (
    AsyncRetrying,
    retry_if_exception,
    retry_if_exception_type,
    stop_after_attempt,
)

from blackboard.app import App, verdict
from blackboard.errors import ConflictError, ProposalRejected, ValidationFailed
from blackboard.keys import GlobalKeys
from blackboard.patch import is_blind
from blackboard.records import Activation, CommitKind, CommitResult, Outcome, Proposal, Submission
from blackboard.store import BoardStore

__all__ = ["Decider", "Decision", "Validator"]

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


class Decider:
    """Decides one submission: its handoff, then :class:`Validator` (commit, reject or
    hold), then the audits on what it committed.

    Args:
        app: the deployment's declaration.
        validator: validates and commits.
        keys: the deployment's key names.
        compliance: where audits' verdicts are recorded.
        incidents: where an audit rollback is told.
    """

    def __init__(
        self,
        app: App,
        validator: Validator,
        keys: GlobalKeys,
        compliance: Compliance,
        incidents: Incidents,
    ) -> None:
        self.app = app
        self.validator = validator
        self.store = validator.store
        self.redis = validator.store.redis
        self.keys = keys
        self.compliance = compliance
        self.incidents = incidents

    async def decide(self, sub: Submission, activation: Activation | None) -> Outcome:
        """The outcome of a proposal (``sub``) made by ``activation`` (None: not read)."""
        if sub.handoff is not None:
            problem = self.app.check_handoff(sub.author, sub.handoff)
            if problem:
                return Outcome(
                    status="rejected",
                    reason="handoff",
                    message=f"{problem}. Hand off to a declared agent you may hand off to.",
                )
        if not sub.patch:
            return Outcome(status="committed")
        summary = (
            activation is not None
            and activation.reason == "summarise"
            and sub.author == self.app.summariser
        )
        depends = (
            list(self.app.agent(sub.author).reads) if sub.author in self.app.agent_names else []
        )
        decision = await self.validator.decide(
            sub.board_id,
            sub.proposal(),
            kind="summary" if summary else "write",
            gates=not summary,
            depends_on=depends,
            summarises=str(activation.payload.get("key", "")) if activation and summary else None,
        )
        if decision.status == "held":
            bk = self.keys.board(sub.board_id)
            await self.redis.hset(bk.held, sub.proposal_id, sub.model_dump_json())
            await self.redis.zadd(self.keys.escalations, {sub.board_id: time.time() * 1000})
            return Outcome(status="held", reason=f"gate:{decision.gate}", message=decision.message)
        if decision.status == "rejected":
            return Outcome(status="rejected", reason=decision.reason, message=decision.message)
        assert decision.commit is not None
        return await self._audit(sub, decision)

    async def _audit(self, sub: Submission, decision: Decision) -> Outcome:
        """Run the audits on the commit's version. What they decide is recorded at once
        in Redis, whichever replica ran them: a pass makes the version a candidate
        rollback target; a failure rolls back to the newest version below it that passed
        (:class:`~blackboard.supervisor.compliance.Compliance`)."""
        commit = decision.commit
        assert commit is not None
        outcome = Outcome(status="committed", version=commit.version, keys=commit.keys)
        if not self.app.audits or not commit.keys:
            return outcome
        board_id, rollback_id = sub.board_id, f"audit-rb.{sub.proposal_id}"
        # A failure decided before (this submission redelivered) is finished as decided,
        # whatever the audits say on a second run.
        decided = await self.compliance.decided(board_id, rollback_id)
        if decided is not None:
            failure: tuple[str, str] | None = (decided.audit, decided.message)
        else:
            failure = await self._run_audits(sub.board_id, commit.version)
        if failure is None:
            await self.passed(board_id, outcome)
            return outcome
        outcome.audit, outcome.message = failure
        claim = await self.compliance.claim(board_id, commit.version, rollback_id, *failure)
        if isinstance(claim, Dropped):
            return outcome  # an earlier rollback took this version's content back already
        why = f"audit {claim.audit!r} failed: {claim.message}"
        result = await self.store.rollback(
            board_id, to=claim.target, author="supervisor", reason=why, proposal_id=rollback_id
        )
        await self.compliance.passed(board_id, result.version)  # the target's content
        await self.incidents.record(
            board_id, "rollback", f"{why} (to v{claim.target})", result.version
        )
        return outcome

    async def passed(self, board_id: str, outcome: Outcome) -> None:
        """Record that the committed ``outcome``'s version passed its audits, at once;
        if an audit rollback dropped it meanwhile, say so in the outcome (nothing is
        recorded: that content is gone, and its author is asked to redo it). Nothing to
        record without audits, nor for a commit that changed nothing."""
        if not self.app.audits or not outcome.keys or outcome.status != "committed":
            return
        assert outcome.version is not None
        dropped = await self.compliance.passed(board_id, outcome.version)
        if dropped is not None:
            outcome.reason = "rolled_back"
            outcome.message = (
                f"committed as v{outcome.version}, then rolled back to v{dropped.target} "
                "(another commit failed its audit) before its own audits passed; its "
                "author is asked to redo it."
            )

    async def _run_audits(self, board_id: str, version: int) -> tuple[str, str] | None:
        """The first audit that fails on ``version`` and why, or None."""
        reads = sorted({k for a in self.app.audits for k in a.reads})
        view = (await self.store.read(board_id, at=version)).data
        for audit in self.app.audits:
            try:
                result: Any = audit.check({k: view.get(k) for k in reads})
                if inspect.isawaitable(result):
                    result = await result
                failed = verdict(result, audit.message or f"audit {audit.name!r} failed")
            except Exception as exc:
                failed = f"audit {audit.name!r} raised {type(exc).__name__}: {exc}"
            if failed:
                return audit.name, failed
        return None
