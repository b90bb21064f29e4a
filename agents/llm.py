"""An LLM agent declared, not written: instructions, a model, what it reads and owns.

Its output schema is built from the owned keys' pydantic types (plus the handoff choice
when it declares handoffs) and asked for with the provider's structured output; the
validated answer becomes the proposal. An answer that fails validation is a
:class:`~blackboard.errors.SemanticError`, so the supervisor sends a rewrite request
carrying the validation message, within ``max_rewrites``.

Given ``tools`` (names in the app's tool registry), the model may call them first,
through the runtime's model<->tool loop (``Context.complete``, see
``blackboard.agents.toolloop``): each call runs through the registry inside the
activation with an idempotency key made of the activation and the call's arguments, so
a retried or reclaimed activation collects the first result instead of repeating the
effect; a tool's error is the tool's answer; a repeated identical call and too many
rounds end the attempt as a rewrite::

    intake = llm_agent(
        "intake",
        instructions="Extract the loan amount and the yearly income from the application.",
        model="openai:gpt-4o-mini",
        reads=["application"],
    )
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

from blackboard.agents.agent import Agent, Context, Output, Trigger
from blackboard.agents.models import Completion, Model
from blackboard.agents.providers.spec import model_from_spec
from blackboard.agents.toolloop import tool_problem
from pydantic import BaseModel, Field, create_model

from blackboard.errors import ConfigError, SemanticError
from blackboard.records import Handoff
from blackboard.schema import Key

if TYPE_CHECKING:
    from blackboard.app import App

__all__ = ["HANDOFF_REASON", "HANDOFF_TO", "LLMAgent", "llm_agent"]

HANDOFF_TO = "handoff_to"
"""The output field naming who acts next (null: nobody in particular)."""
HANDOFF_REASON = "handoff_reason"


class LLMAgent(Agent):
    """An agent whose work is one structured answer of its model.

    Args:
        name: the agent's name (owner name of its keys).
        instructions: the system prompt: what to do with the keys it reads.
        model: a spec string (``openai:gpt-4o-mini``…, see ``model_from_spec``) or a
            model object; None: the app's model.
        reads, owns, triggers, handoffs: as for any agent.
        tools: names of the app's tools the model may call.
        max_tool_rounds: model turns that call tools, per activation; one more is a
            rewrite.
    """

    def __init__(
        self,
        name: str,
        *,
        instructions: str,
        model: str | Model | None = None,
        reads: Sequence[str] = (),
        owns: Sequence[str] = (),
        triggers: Sequence[Trigger] = (),
        handoffs: Sequence[str] | None = None,
        tools: Sequence[str] = (),
        max_tool_rounds: int = 8,
    ) -> None:
        if not instructions.strip():
            raise ConfigError(f"llm agent {name!r}: give it instructions.")
        self.name = name
        self.instructions = instructions
        self.model = model_from_spec(model) if isinstance(model, str) else model
        self.reads = tuple(reads)
        self.owns = tuple(owns)
        self.triggers = tuple(triggers)
        self.handoffs = None if handoffs is None else tuple(handoffs)
        self.output: type[BaseModel] | None = None
        self.system = ""
        self.tools = tuple(tools)
        self.max_tool_rounds = max_tool_rounds

    def bind(self, app: App) -> None:
        """Build the output schema from the owned keys' types, once the app knows them."""
        if self.model is None and app.model is None:
            raise ConfigError(
                f"llm agent {self.name!r} has no model: pass model='openai:…' (a spec "
                "string) or give the app a model."
            )
        fields: dict[str, Any] = {}
        for key in self.owns:
            info = app.board.model_fields[key]
            others = [m for m in info.metadata if not isinstance(m, Key)]
            annotation = Annotated[(info.annotation, *others)] if others else info.annotation
            # Required, even where the board has a default: the model gives every value.
            fields[key] = (annotation, Field(description=info.description))
        if self.handoffs:
            for reserved in (HANDOFF_TO, HANDOFF_REASON):
                if reserved in fields:
                    raise ConfigError(
                        f"llm agent {self.name!r} owns a key named {reserved!r}, which its "
                        "output uses for the handoff; rename the key."
                    )
            targets = cast(Any, Literal[tuple(self.handoffs)])
            fields[HANDOFF_TO] = (
                targets | None,
                Field(description="The agent who should act next, or null for none."),
            )
            fields[HANDOFF_REASON] = (str, Field(description="Why, in one sentence."))
        title = "".join(part.capitalize() for part in self.name.replace("-", "_").split("_"))
        self.output = create_model(f"{title}Output", **fields)
        owned = ", ".join(self.owns)
        self.system = (
            f"{self.instructions.strip()}\n\nYou are {self.name!r}. Answer with one JSON "
            f"object giving a value for each key you own ({owned})"
            + (f" and who acts next ({HANDOFF_TO})." if self.handoffs else ".")
        )
        """The system prompt, built once with the schema (it depends only on them)."""
        for name in self.tools:  # checked when the app is built, before anything runs
            if problem := tool_problem(app.tools, self.name, name):
                raise ConfigError(f"llm agent {self.name!r} uses tool {name!r}, but {problem}")

    async def run(self, ctx: Context) -> Output:
        if self.output is None:
            raise ConfigError(f"llm agent {self.name!r} runs outside an App; add it to one.")
        answer = await ctx.complete(
            self.messages(ctx),
            tools=self.tools,
            schema=self.output,
            max_rounds=self.max_tool_rounds,
        )
        return self._output(answer)

    def _output(self, answer: Completion) -> Output:
        assert self.output is not None
        parsed = answer.parsed
        if not isinstance(parsed, self.output):
            raise SemanticError(f"the model gave no {self.output.__name__} object; answer again.")
        values = parsed.model_dump(mode="json")
        handoff = None
        if values.get(HANDOFF_TO) and self.handoffs:
            handoff = Handoff(to=values[HANDOFF_TO], reason=str(values.get(HANDOFF_REASON, "")))
        return Output(
            updates={k: values[k] for k in self.owns},
            handoff=handoff,
            reason=str(values.get(HANDOFF_REASON, "")),
        )

    def messages(self, ctx: Context) -> list[dict[str, str]]:
        """The instructions, then the board as the agent sees it, the handoff's payload,
        and (on a rewrite) why the last answer was refused."""
        parts = [f"Board at version {ctx.version}:\n{_json(ctx.board)}"]
        if ctx.payload:
            parts.append(f"Handed to you with:\n{_json(ctx.payload)}")
        if ctx.feedback:
            parts.append(f"Your previous answer was refused: {ctx.feedback}\nCorrect it.")
        return [
            {"role": "system", "content": self.system},
            {"role": "user", "content": "\n\n".join(parts)},
        ]


def _json(value: Mapping[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


llm_agent = LLMAgent
"""Declare an LLM agent (see :class:`LLMAgent`): no code, only what it is for."""
