"""Agents that ship with the framework.

:class:`Summariser` is what the supervisor activates when a summarisable key grows past
its threshold. It needs no model: it keeps the recent items and the canonical facts
verbatim and condenses the rest to at most half the input (:data:`RATIO`); given a model
(its own, or the app's in the context) it asks the model for the condensed part instead,
and the ratio still holds. The raw content stays in the board's log.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from blackboard.agents.agent import Agent, Context, Output
from blackboard.agents.models import Model

from blackboard import codec
from blackboard.errors import ConfigError, NeedsHuman, SemanticError

__all__ = ["HumanAgent", "RATIO", "Rule", "RuleRouter", "Summariser", "condense", "offline_digest"]

RATIO = 0.5
"""What a list is condensed to, at most: this fraction of its JSON's bytes (the measure
the summary threshold uses), or of the key's threshold if that is smaller, unless the
lines kept verbatim take more by themselves."""

FACT = re.compile(r"^\s*(FACT|DECISION|ID)\s*:", re.IGNORECASE)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_SUMMARY = re.compile(r"^\[summary of (\d+) earlier entries\] ?")
_SHARE = 16
"""Below this many characters per condensed item, the digest no longer gives each item
a share: it keeps the first ones whole, cut where the budget ends."""


def _first_sentence(text: str, limit: int) -> str:
    sentence = _SENTENCE.split(text.strip(), maxsplit=1)[0]
    return _cut(sentence, limit)


def _cut(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` characters, an ellipsis marking a cut."""
    if len(text) <= limit:
        return text
    return text[: max(limit - 1, 0)].rstrip() + "…" if limit > 0 else ""


def _size(value: Any) -> int:
    return codec.utf8_len(codec.dumps(value))


@dataclass
class _Split:
    """A list's items as :func:`condense` treats them."""

    facts: list[str]
    """Older fact lines: kept verbatim."""
    rest: list[str]
    """Older items to condense (an earlier summary line without its header)."""
    recent: list[str]
    """The newest items: kept verbatim."""
    count: int
    """Entries the summary line stands for (an earlier summary's count included)."""

    @property
    def header(self) -> str:
        return f"[summary of {self.count} earlier entries]"

    def target(self, items: list[str], ratio: float, threshold: int | None) -> int:
        """The most the result may take: ``ratio`` of the input or of the threshold."""
        return int(ratio * min(_size(items), threshold or _size(items)))

    def budget(self, items: list[str], ratio: float, threshold: int | None = None) -> int:
        """Bytes left for the digest within the target."""
        fixed = _size([*self.facts, self.header, *self.recent]) + 1  # its space
        return self.target(items, ratio, threshold) - fixed

    def assemble(
        self, items: list[str], digest: str, ratio: float, threshold: int | None = None
    ) -> list[str]:
        """The condensed list, its digest cut until the whole fits; ``items`` as they
        are if nothing smaller can be made (the count alone is longer than the rest)."""
        target = max(
            self.target(items, ratio, threshold),
            _size([*self.facts, self.header, *self.recent]),
        )
        while True:
            line = f"{self.header} {digest}" if digest else self.header
            out = [*self.facts, line, *self.recent]
            over = _size(out) - target
            if over <= 0 or not digest:
                return out if _size(out) < _size(items) else list(items)
            digest = _cut(digest, len(digest) - over - 1)  # shorter by at least one


def _split(items: list[str], keep_recent: int) -> _Split | None:
    """None if there is nothing to condense (few items, or only facts)."""
    if len(items) <= keep_recent:
        return None
    cut = len(items) - keep_recent
    older, recent = items[:cut], items[cut:]
    facts = [i for i in older if FACT.match(i)]
    rest, count = [], 0
    for item in older:
        if FACT.match(item):
            continue
        earlier = _SUMMARY.match(item)
        count += int(earlier.group(1)) if earlier else 1
        rest.append(item[earlier.end() :] if earlier else item)
    if not rest:
        return None
    return _Split(facts, [r for r in rest if r], recent, count)


def offline_digest(texts: Sequence[str], budget: int, width: int = 60) -> str:
    """The first sentence of each text, each cut to an equal share of ``budget``
    characters (at most ``width``); with too many texts for a useful share each, the
    first ones that fit, and an ellipsis for the rest. Deterministic, no model."""
    if budget <= 0 or not texts:
        return ""
    share = min(width, budget // len(texts) - 2)  # each with its "; "
    firsts = [_first_sentence(t, max(share, _SHARE)) for t in texts]
    digest = ""
    for i, first in enumerate(firsts):
        # sentences follow one another; fragments are set apart
        joined = f"{digest}{_separator(digest)}{first}" if digest else first
        room = budget - (2 if i < len(firsts) - 1 else 0)  # for " …" if some are left
        if len(joined) > room:
            return f"{digest} …" if digest else _cut(first, budget)
        digest = joined
    return digest


def _separator(text: str) -> str:
    return " " if text.endswith((".", "!", "?")) else "; "


def condense(
    items: list[str],
    *,
    keep_recent: int,
    width: int = 60,
    ratio: float = RATIO,
    threshold: int | None = None,
) -> list[str]:
    """Condense a list of notes to at most ``ratio`` (half) of its JSON's bytes.

    Items marked as facts (``FACT:``, ``DECISION:``, ``ID:``) and the ``keep_recent``
    newest stay verbatim (facts first, the newest last); the older rest becomes one line,
    ``[summary of N earlier entries]`` and their first sentences, cut to fit (an earlier
    summary line counts for the entries it stood for). The result's JSON is at most
    ``ratio`` of the input's bytes, and of ``threshold`` (the key's summary threshold)
    if that is smaller, so that the key has room to grow before its next summary; unless
    the verbatim lines and that count alone take more: then the count is all that stays
    of the rest. Never larger than the input: when nothing smaller can be made, the
    items come back as they are.
    """
    split = _split(items, keep_recent)
    if split is None:
        return list(items)
    digest = offline_digest(split.rest, split.budget(items, ratio, threshold), width)
    return split.assemble(items, digest, ratio, threshold)


class Summariser(Agent):
    """Condenses one key named by the supervisor (``ctx.payload["key"]``).

    A list of strings keeps its newest ``keep_recent`` items and fact lines verbatim
    and shrinks to at most ``ratio`` of its JSON's bytes, or of the key's threshold (the
    supervisor names it: ``ctx.payload["threshold"]``) if smaller (see
    :func:`condense`); a long
    string keeps its first and last paragraphs. The condensed part comes from
    :meth:`digest`: written by ``model`` if given (any :class:`~blackboard.agents.Model`;
    its tokens and cost are reported), else by the app's model if it has one, else
    offline. To condense differently, subclass and override :meth:`digest`; whatever it
    returns is cut to fit the ratio.
    """

    def __init__(
        self,
        name: str = "summariser",
        *,
        keep_recent: int = 3,
        width: int = 60,
        ratio: float = RATIO,
        model: Model | None = None,
    ) -> None:
        if not 0 < ratio < 1:
            raise ConfigError(
                f"Summariser ratio {ratio} must be between 0 and 1 (exclusive); the default "
                f"is {RATIO}."
            )
        self.name = name
        self.keep_recent = keep_recent
        self.width = width
        self.ratio = ratio
        self.model = model

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

    async def digest(self, ctx: Context, texts: Sequence[str], budget: int) -> str:
        """The condensed text of ``texts``, in about ``budget`` characters: by the
        context's model if there is one (this summariser's own, or the app's), else
        offline (:func:`offline_digest`). Override it to condense differently."""
        if ctx.model is None or budget <= 0:
            return offline_digest(texts, budget, self.width)
        reply = await ctx.model.complete(
            [
                {
                    "role": "system",
                    "content": "Summarise these notes in at most "
                    f"{budget} characters. Keep names, numbers and decisions.",
                },
                {"role": "user", "content": "\n".join(texts)},
            ]
        )
        return str(reply.text).strip()

    async def _list(self, ctx: Context, items: list[str]) -> list[str]:
        split = _split(items, self.keep_recent)
        if split is None:
            return list(items)
        threshold = ctx.payload.get("threshold")
        threshold = threshold if isinstance(threshold, int) and threshold > 0 else None
        budget = split.budget(items, self.ratio, threshold)
        digest = await self.digest(ctx, split.rest, budget)
        return split.assemble(items, digest, self.ratio, threshold)

    async def _text(self, ctx: Context, text: str) -> str:
        paragraphs = [p for p in text.split("\n\n") if p.strip()]
        if len(paragraphs) <= 2:
            return _first_sentence(text, 2000) if len(text) > 2000 else text
        middle = paragraphs[1:-1]
        budget = sum(min(len(p), self.width) + 1 for p in middle)
        digest = _cut(await self.digest(ctx, middle, budget), budget)
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
