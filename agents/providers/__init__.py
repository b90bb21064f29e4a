"""Real models on the providers' official SDKs, chosen by a spec string.

Each SDK is an optional extra (``pip install 'redis-blackboard[openai]'``,
``[anthropic]``), imported only when its adapter is built; without it, building one
raises a :class:`~blackboard.errors.ConfigError` naming the extra to install.
"""

from blackboard.agents.providers.anthropic import AnthropicModel
from blackboard.agents.providers.openai import OpenAIModel
from blackboard.agents.providers.spec import model_from_command_line, model_from_spec

__all__ = ["AnthropicModel", "OpenAIModel", "model_from_command_line", "model_from_spec"]
