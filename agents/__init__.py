"""Agents: the contract users write against and the process runtime.

Installed as ``blackboard.agents`` so it never shadows openai-agents' top-level
``agents`` package.
"""

from blackboard.agents.agent import (
    Agent,
    Context,
    Output,
    Trigger,
    agent,
    when_all,
    when_changed,
)

from blackboard.records import Handoff

__all__ = [
    "Agent",
    "AgentWorker",
    "Context",
    "Handoff",
    "Output",
    "Trigger",
    "agent",
    "when_all",
    "when_changed",
]


def __getattr__(name: str) -> object:
    # The runtime imports the supervisor (to submit); load it only when asked for, so
    # that declaring agents never imports the supervisor.
    if name == "AgentWorker":
        from blackboard.agents.runtime import AgentWorker

        return AgentWorker
    raise AttributeError(name)
