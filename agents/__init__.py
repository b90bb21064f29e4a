"""Agents: the contract users write against, the process runtime, tools and models.

Installed as ``blackboard.agents`` so it never shadows openai-agents' top-level
``agents`` package. The contract arrives with the agents runtime; today this package
only reserves the namespace.
"""

__all__: list[str] = []
