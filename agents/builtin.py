"""Agents that ship with the framework.

:class:`Summariser` is what the supervisor activates when a summarisable key grows past
its threshold. It needs no model: it keeps the recent items and the canonical facts
verbatim and condenses the rest; given a model (the app's, in the context) it asks the
model for the condensed part instead. The raw content stays in the board's log.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from blackboard.agents.agent import Agent, Context, Output

from blackboard.errors import NeedsHuman, SemanticError

__all__ = ["HumanAgent", "Rule", "RuleRouter", "Summariser", "condense"]

FACT = re.compile(r"^\s*(FACT|DECISION|ID)\s*:", re.IGNORECASE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def _first_sentence(text: str, limit: int) -> str:
    sentence = _SENTENCE.split(text.strip(), maxsplit=1)[0]
    return sentence if len(sentence) <= limit else sentence[: limit - 1].rstrip() + "…"


def condense(items: list[str], *, keep_recent: int, width: int = 60) -> list[str]:
    """Older items become one line of their first sentences; items marked as facts
    (``FACT:``, ``DECISION:``, ``ID:``) and the ``keep_recent`` newest stay verbatim."""
    if len(items) <= keep_recent:
        return list(items)
    split = len(items) - keep_recent
    older, recent = items[:split], items[split:]
    facts = [i for i in older if FACT.match(i)]
    rest = [i for i in older if not FACT.match(i)]
    if not rest:
        return [*facts, *recent]
    digest = "; ".join(_first_sentence(i, width) for i in rest)
    return [*facts, f"[summary of {len(rest)} earlier entries] {digest}", *recent]


class Summariser(Agent):
    """Condenses one key named by the supervisor (``ctx.payload["key"]``).

    Lists of strings keep their newest ``keep_recent`` items and fact lines; a long
    string keeps its first and last paragraphs. With a model in the context, the model
    writes the condensed part.
    """

    def __init__(self, name: str = "summariser", *, keep_recent: int = 3, width: int = 60) -> None:
        self.name = name
        self.keep_recent = keep_recent
        self.width = width

    async def run(self, ctx: Context) -> Output:
        key = str(ctx.payload.get("key", ""))
        if key not in ctx.board:
            raise SemanticError(f"nothing to summarise: key {key!r} is not on the board")
        value = ctx.board[key]
        if isinstance(value, list) and all(isinstance(i, str) for i in value):
            condensed: Any = await self._list(ctx, value)
        elif isinstance(value, str):
            condensed = await self._text(ctx, value)
        else:
            raise SemanticError(
                f"the built-in summariser condenses strings and lists of strings; key "
                f"{key!r} holds {type(value).__name__}. Give the app a summariser agent "
                "that understands it."
            )
        return Output(updates={key: condensed}, reason=f"summarised {key}")

    async def _list(self, ctx: Context, items: list[str]) -> list[str]:
        if ctx.model is None or len(items) <= self.keep_recent:
            return condense(items, keep_recent=self.keep_recent, width=self.width)
        split = len(items) - self.keep_recent
        older, recent = items[:split], items[split:]
        facts = [i for i in older if FACT.match(i)]
        rest = [i for i in older if not FACT.match(i)]
        reply = await ctx.model.complete(
            [
                {
                    "role": "system",
                    "content": "Summarise these notes in two sentences. Keep "
                    "names, numbers and decisions.",
                },
                {"role": "user", "content": "\n".join(rest)},
            ]
        )
        return [*facts, f"[summary of {len(rest)} earlier entries] {reply.text}", *recent]

    async def _text(self, ctx: Context, text: str) -> str:
        paragraphs = [p for p in text.split("\n\n") if p.strip()]
        if len(paragraphs) <= 2:
            return _first_sentence(text, 2000) if len(text) > 2000 else text
        middle = paragraphs[1:-1]
        if ctx.model is not None:
            reply = await ctx.model.complete(
                [
                    {"role": "system", "content": "Summarise in two sentences."},
                    {"role": "user", "content": "\n\n".join(middle)},
                ]
            )
            digest = reply.text
        else:
            digest = " ".join(_first_sentence(p, self.width) for p in middle)
        return f"{paragraphs[0]}\n\n[summary] {digest}\n\n{paragraphs[-1]}"


@dataclass(frozen=True)
class Rule:
    """Send the work to ``to`` when ``when(board)`` holds; ``reads`` are the keys it uses."""

    to: str
    when: Callable[[Mapping[str, Any]], bool]
    reads: tuple[str, ...]


class RuleRouter:
    """A router for ``App(router=...)``: the first rule that holds names the next agent
    (or every rule that holds, with ``fan_out``). Deterministic, no model needed."""

    def __init__(self, rules: Sequence[Rule], *, fan_out: bool = False) -> None:
        self.rules = list(rules)
        self.fan_out = fan_out

    @property
    def reads(self) -> list[str]:
        return sorted({k for r in self.rules for k in r.reads})

    def __call__(self, board: Mapping[str, Any], changed: Sequence[str]) -> list[str]:
        chosen = [r.to for r in self.rules if r.when(board)]
        return chosen if self.fan_out else chosen[:1]


class HumanAgent(Agent):
    """Asks a person for input: the board waits (``awaiting_approval``) with the question
    among the escalations, until an operator answers with ``set`` (writing the keys the
    board model gives to ``human``); routing then continues from that commit."""

    def __init__(self, name: str, question: str, *, reads: Sequence[str] = ()) -> None:
        self.name = name
        self.question = question
        self.reads = tuple(reads)

    async def run(self, ctx: Context) -> Output:
        known = ", ".join(f"{k}={v!r}" for k, v in sorted(ctx.board.items()))
        raise NeedsHuman(f"{self.question} (board {ctx.board_id} v{ctx.version}: {known})")
