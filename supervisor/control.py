"""Deciding who acts after a commit: explicit handoffs, triggers (evaluated only for
agents whose watched keys changed), the optional router, summarisation when a
summarisable key crossed its threshold, and completion."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from blackboard.app import App
from blackboard.records import Handoff

__all__ = ["Plan", "Wanted", "plan_after_commit", "reads_for"]


@dataclass(frozen=True)
class Wanted:
    """One activation the supervisor wants."""

    agent: str
    reason: str
    payload: dict[str, Any] = field(default_factory=dict)
    feedback: str = ""
    """For a rewrite (or a summarisation redone): what to fix. Apart from the payload,
    which a rewrite keeps as its activation was given it."""


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


def plan_after_commit(
    app: App,
    *,
    author: str,
    handoff: Handoff | None,
    changed: Sequence[str],
    board: Mapping[str, Any],
    failed: Mapping[str, str],
    summarise: Sequence[str] = (),
) -> Plan:
    """Activations wanted after one commit (or handoff), deduplicated by agent."""
    if app.done is not None and changed and app.done(board):
        return Plan([], done=True)
    wanted: dict[str, Wanted] = {}
    if handoff is not None:
        wanted[handoff.to] = Wanted(handoff.to, "handoff", dict(handoff.payload))
    for agent, trigger in app.triggers_for(changed):
        if agent.name == author or agent.name in wanted:
            continue
        if trigger.fires(board, failed=_failed_keys(app, failed)):
            wanted[agent.name] = Wanted(agent.name, "trigger")
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


def _failed_keys(app: App, failed: Mapping[str, str]) -> list[str]:
    """Keys whose owner's activation failed or timed out (for partial joins)."""
    return [k for name in failed if name in app.agent_names for k in app.agent(name).owns]
