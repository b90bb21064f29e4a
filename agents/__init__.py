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
from blackboard.agents.runtime import AgentWorker

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
