"""Deciding who acts after a commit: explicit handoffs, triggers (evaluated only for
agents whose watched keys changed), the optional router, summarisation when a
summarisable key crossed its threshold, and completion."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from blackboard.app import App
from blackboard.records import Handoff

if TYPE_CHECKING:
    from blackboard.agents.agent import Trigger

__all__ = [
    "Plan",
    "Reason",
    "Wanted",
    "join_keys",
    "key_versions",
    "plan_after_commit",
    "reads_for",
]

Reason = Literal["start", "handoff", "trigger", "router", "rewrite", "summarise"]
"""Why an agent is activated: the values of :attr:`blackboard.records.Activation.reason`
(mypy checks the two agree wherever a wanted activation becomes a record)."""


@dataclass(frozen=True)
class Wanted:
    """One activation the supervisor wants."""

    agent: str
    reason: Reason
    payload: dict[str, Any] = field(default_factory=dict)
    feedback: str = ""
    """For a rewrite (or a summarisation redone): what to fix. Apart from the payload,
    which a rewrite keeps as its activation was given it."""
    origin: str = ""
    """What the activation's id derives from instead of the commit that caused it (''
    = that commit). A join's names the versions of the keys it waited on, so replicas
    routing different branches' commits create the same activation, and Redis keeps one."""


@dataclass
class Plan:
    activations: list[Wanted]
    done: bool = False


def reads_for(app: App, changed: Sequence[str]) -> list[str]:
    """The keys routing needs to see after a commit that changed ``changed``."""
    keys = {k for _, trig in app.triggers_for(changed) for k in trig.watches}
    keys.update(app.done_reads)
    keys.update(app.router_reads)
    return sorted(keys)


def join_keys(app: App, changed: Sequence[str]) -> list[str]:
    """The keys joins watching ``changed`` wait on: their versions identify a join's
    activation (see :attr:`Wanted.origin`)."""
    return sorted({k for _, trig in app.triggers_for(changed) if trig.join for k in trig.watches})


def key_versions(keys: Sequence[str], raw: Sequence[Any]) -> dict[str, int]:
    """Keys' versions as read from the board's kver hash (absent: 0, never written)."""
    return {k: int(v or 0) for k, v in zip(keys, raw, strict=True)}


def plan_after_commit(
    app: App,
    *,
    author: str,
    handoff: Handoff | None,
    changed: Sequence[str],
    board: Mapping[str, Any],
    failed: Mapping[str, str],
    summarise: Sequence[str] = (),
    versions: Mapping[str, int] | None = None,
    board_id: str = "",
    version: int | None = None,
) -> Plan:
    """Activations wanted after one commit (or handoff), deduplicated by agent.

    ``versions``: the versions of the keys joins wait on (:func:`join_keys`), read with
    ``board``; a join that fires is identified by them (and the board's id). A join is
    left to a later commit (``version`` being this one's) that changed a key it waits
    on: that commit's routing sees the join as this one does, and more (replicas route
    commits in any order, and a later commit may be rolled back by its audit)."""
    if app.done is not None and changed and app.done(board):
        return Plan([], done=True)
    wanted: dict[str, Wanted] = {}
    if handoff is not None:
        wanted[handoff.to] = Wanted(handoff.to, "handoff", dict(handoff.payload))
    for agent, trigger in app.triggers_for(changed):
        if agent.name == author or agent.name in wanted:
            continue
        origin = _join_origin(agent.name, trigger, versions, board_id, version)
        if origin is None:
            continue  # left to the later commit
        if trigger.fires(board, failed=_failed_keys(app, failed)):
            wanted[agent.name] = Wanted(agent.name, "trigger", origin=origin)
    if app.router is not None:
        for name in app.router(board, list(changed)):
            app.agent(name)
            wanted.setdefault(name, Wanted(name, "router"))
    if app.summariser is not None:
        for key in summarise:
            # the key first (summarise.lua finds open summarisations by it), then its
            # threshold in bytes, so the summary leaves room to grow before the next one
            limit_bytes, limit_tokens = app.summary_threshold(key)
            if limit_tokens is not None:
                limit_bytes = min(limit_bytes, 4 * limit_tokens)
            payload = {"key": key, "threshold": limit_bytes}
            wanted[f"{app.summariser}:{key}"] = Wanted(app.summariser, "summarise", payload)
    return Plan(list(wanted.values()))


def _join_origin(
    agent: str,
    trigger: Trigger,
    versions: Mapping[str, int] | None,
    board_id: str,
    version: int | None,
) -> str | None:
    """A join's :attr:`Wanted.origin` (the board, the agent and the versions of the keys
    it waits on); '' for another trigger or with no versions; None if a commit after
    ``version`` changed a key it waits on."""
    if not trigger.join or versions is None:
        return ""
    if version is not None and any(versions.get(k, 0) > version for k in trigger.watches):
        return None
    seen = ",".join(f"{k}@{versions.get(k, 0)}" for k in trigger.watches)
    return f"join:{board_id}:{agent}:{seen}"


def _failed_keys(app: App, failed: Mapping[str, str]) -> list[str]:
    """Keys whose owner's activation failed or timed out (for partial joins)."""
    return [k for name in failed if name in app.agent_names for k in app.agent(name).owns]
