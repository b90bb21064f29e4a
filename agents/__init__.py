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
from blackboard.agents.builtin import HumanAgent, Rule, RuleRouter, Summariser, condense
from blackboard.agents.llm import LLMAgent, llm_agent
from blackboard.agents.models import (
    COSTS,
    Completion,
    Model,
    OfflineModel,
    ToolCall,
    ToolSpec,
    cost_of,
)
from blackboard.agents.providers import model_from_command_line, model_from_spec
from blackboard.agents.runtime import AgentWorker

from blackboard.records import Handoff

__all__ = [
    "Agent",
    "AgentWorker",
    "COSTS",
    "Completion",
    "Context",
    "Handoff",
    "HumanAgent",
    "LLMAgent",
    "Model",
    "OfflineModel",
    "Output",
    "Rule",
    "RuleRouter",
    "Summariser",
    "ToolCall",
    "ToolSpec",
    "Trigger",
    "agent",
    "condense",
    "cost_of",
    "llm_agent",
    "model_from_command_line",
    "model_from_spec",
    "when_all",
    "when_changed",
]
