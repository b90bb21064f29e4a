"""One spec string picks a model anywhere a model is configured."""

from __future__ import annotations

import argparse
import re
from collections.abc import Sequence

from blackboard.agents.models import Model, OfflineModel

from blackboard.errors import ConfigError

__all__ = ["FORMS", "model_from_command_line", "model_from_spec"]

FORMS = (
    "'offline', 'openai:MODEL', 'anthropic:MODEL' or 'openai-compatible:MODEL@URL' "
    "(e.g. 'openai:gpt-4o-mini', 'openai-compatible:llama3.1:8b@http://localhost:11434/v1')"
)
_COMPATIBLE = re.compile(r"^(?P<name>.+?)@(?P<url>https?://\S+)$")


def model_from_spec(spec: str, *, timeout: float = 60.0) -> Model:
    """The model a spec names. Keys come from ``OPENAI_API_KEY`` / ``ANTHROPIC_API_KEY``
    (the process environment), never from the board; an
    OpenAI-compatible server is sent ``OPENAI_API_KEY`` if set, else a placeholder.

    Raises:
        ConfigError: the spec is malformed, its provider's key is not set, or its SDK
            (an optional extra) is not installed.
    """
    spec = spec.strip()
    if spec == "offline":
        return OfflineModel()
    provider, sep, name = spec.partition(":")
    if not sep:
        raise ConfigError(f"model spec {spec!r}: expected one of {FORMS}.")
    if not name:
        raise ConfigError(f"model spec {spec!r} names no model; expected one of {FORMS}.")
    if provider == "openai":
        from blackboard.agents.providers.openai import OpenAIModel

        return OpenAIModel(name, timeout=timeout)
    if provider == "anthropic":
        from blackboard.agents.providers.anthropic import AnthropicModel

        return AnthropicModel(name, timeout=timeout)
    if provider == "openai-compatible":
        match = _COMPATIBLE.match(name)
        if match is None:
            problem = (
                "its URL must start with http:// or https://"
                if "@" in name
                else "expected openai-compatible:NAME@URL"
            )
            raise ConfigError(f"model spec {spec!r}: {problem}, e.g. {FORMS}.")
        from blackboard.agents.providers.openai import OpenAIModel

        return OpenAIModel(match["name"], base_url=match["url"], provider=None, timeout=timeout)
    raise ConfigError(
        f"model spec {spec!r}: unknown provider {provider!r}; expected one of {FORMS}."
    )


def model_from_command_line(
    description: str | None = None, argv: Sequence[str] | None = None
) -> Model | None:
    """A program's ``--model SPEC`` option (the examples' one): the model it names, or
    None for ``offline`` (the default: the program's own deterministic model). A bad
    spec or a missing key ends the program with the usage error, as argparse does."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--model",
        default="offline",
        metavar="SPEC",
        help=(
            "offline (default: the program's deterministic model), openai:MODEL, "
            "anthropic:MODEL or openai-compatible:MODEL@URL; keys from OPENAI_API_KEY / "
            "ANTHROPIC_API_KEY"
        ),
    )
    spec = parser.parse_args(argv).model
    try:
        return None if spec.strip() == "offline" else model_from_spec(spec)
    except ConfigError as exc:
        parser.error(str(exc))
