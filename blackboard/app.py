"""The app: one declaration of a deployment, imported by every process.

It bundles the board model, the agents, policies, audits, gates, limits, the completion
condition and an optional router. Misdeclarations fail in the constructor, before
anything runs. The supervisor publishes :meth:`App.declaration` to Redis so the CLI can
inspect boards without importing user code, and a process whose declaration differs
from the published one is refused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from blackboard import codec
from blackboard.errors import ConfigError
from blackboard.keys import check_name
from blackboard.schema import HUMAN, SUPERVISOR, BoardSchema

if TYPE_CHECKING:
    from blackboard.agents.agent import Agent, Trigger
    from blackboard.agents.pricing import Prices
    from blackboard.records import Handoff

__all__ = ["App", "Audit", "Gate", "Limits", "Policy", "load_app"]

Check = Callable[[Mapping[str, Any]], "bool | str | None"]
"""A synchronous check over a board view (key -> value, unset keys absent): True or None
passes; False fails with the check's default message; a non-empty string fails with
that string as the reason. See :class:`Policy` and ``App.done``."""


def verdict(result: bool | str | None, default_message: str) -> str | None:
    """A check passes with True or None; False or a message is a failure."""
    if result is True or result is None:
        return None
    return result if isinstance(result, str) and result else default_message


@dataclass(frozen=True)
class Policy:
    """A deterministic check over the board as it would be after a proposal; runs before
    commit. The keys it reads join the commit's read set, so a concurrent change to them
    is a conflict (re-validated), never a silent write skew.

    ``check(board)``:
        Receives: the board as it would be after the proposal, limited to the keys the
            proposal touches and those the app's policies read (``reads``); an unset
            key is absent.
        Returns: True or None when satisfied; False (``message`` is the reason) or a
            message when not: the proposal is rejected with that reason, nothing is
            committed, and its author gets it as feedback for a rewrite.
        Runs: in the supervisor, synchronously, on every proposal, before any gate
            and the commit; again if the commit lost a race. Keep it fast and pure
            (no I/O): it runs inside the supervisor's loop.
        Raises: an exception counts as a failure (the reason names it), not a crash.
    """

    name: str
    reads: tuple[str, ...]
    check: Check
    message: str = ""


@dataclass(frozen=True)
class Audit:
    """A check after commit (possibly slow or semantic). A failure rolls the board back
    to the compliant version and sends the author a rewrite request.

    ``check(board)``:
        Receives: the committed version's values of the keys every audit of the app
            reads (``reads``); an unset key is absent.
        Returns: True or None when the version passes; False (``message`` is the
            reason) or a message when not. May be a coroutine function (a model call,
            say); its result is awaited.
        Runs: in the supervisor, after each commit, audits in order until one fails;
            the board goes on meanwhile (later commits may be rolled back with it).
        Raises: an exception counts as a failure (the reason names it).
    """

    name: str
    reads: tuple[str, ...]
    check: Callable[[Mapping[str, Any]], Awaitable[bool | str | None] | bool | str | None]
    message: str = ""


@dataclass(frozen=True)
class Gate:
    """A human-approval checkpoint: a proposal for which ``when(updates, board)`` is true
    is held, not committed, until an operator approves or rejects it.

    ``when(updates, board)``:
        Receives: ``updates``, the values the proposal would write (key -> value, None
            for a removal), and ``board``, the board as it would be after it (the keys
            it touches and those the policies and gates read).
        Returns: True to hold the proposal for an operator (``blackboard approve`` or
            ``reject``); False to let it commit. The first gate that holds wins.
        Runs: in the supervisor, synchronously, after the policies passed and before
            the commit. Keep it fast and pure.
        Raises: an exception leaves the submission pending; it is delivered again up
            to ``Limits.max_deliveries`` times, then dead-lettered (the board waits).
    """

    name: str
    reads: tuple[str, ...]
    when: Callable[[Mapping[str, Any], Mapping[str, Any]], bool]
    message: str = ""


class Limits(BaseModel):
    """Loop, budget and time limits of every board of the app."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    loop_threshold: int = Field(default=3, ge=2)
    """The same handoff (or rewrite) meeting the same board content this many times
    among the board's last ``8 x loop_threshold`` handoffs (no change, or a cycle of
    states back to it) trips the circuit breaker."""
    max_rewrites: int = Field(default=2, ge=0)
    """Consecutive rejections of one agent's proposals before the board escalates."""
    max_activations: int = Field(default=100, ge=1)
    """Total activations per board (like a recursion limit)."""
    activation_timeout_s: float = Field(default=60.0, gt=0)
    deadline_s: float | None = Field(default=None, gt=0)
    """Wall-clock budget of a board from its start."""
    max_tokens: int | None = Field(default=None, ge=1)
    max_cost: float | None = Field(default=None, gt=0)
    summary_bytes: int = Field(default=16_000, ge=64)
    """Default threshold of a summarisable key (bytes of its JSON)."""
    summary_tokens: int | None = Field(default=None, ge=16)
    max_deliveries: int = Field(default=5, ge=1)
    """Deliveries of one queue entry before it is dead-lettered."""
    claim_idle_ms: int = Field(default=30_000, ge=10)
    """A pending entry idle this long is reclaimed from its (presumed dead) consumer."""


Router = Callable[[Mapping[str, Any], Sequence[str]], Sequence[str]]
"""The app's routing callback, ``router(board, changed_keys) -> agent names``.

Receives: the board's values of the keys routing reads (``App.router_reads``, the
    triggers' watched keys and ``App.done_reads``; an unset key is absent) and the keys
    the commit changed.
Returns: names of agents to activate, besides the handoff and the triggers that fired
    (an agent wanted twice is activated once); an empty sequence adds none.
Runs: in the supervisor, synchronously, after every commit that changed keys (once
    ``done`` said the board is not done). Keep it fast and pure.
Raises: an exception, or a name that is not an agent of the app (ConfigError), leaves
    the submission pending: routing is retried on redelivery (the commit is not
    repeated), up to ``Limits.max_deliveries`` times, then it is dead-lettered.
"""


@dataclass
class App:
    """Everything a deployment runs. Build it once in a module and import it everywhere
    (``--app pkg.module:app``).

    Args:
        board: the pydantic board model (every field marked with ``Key``).
        agents: the agents; names unique; each owns exactly the keys the model gives it.
        start: agent(s) activated when a board starts.
        policies, audits, gates: see their classes.
        done: completion condition (a :data:`Check`): called in the supervisor after
            every commit that changed keys, before any activation, with the keys
            routing reads (``done_reads`` among them). A truthy result makes the
            board ``done`` and activates nobody; False or None goes on. An exception
            leaves the submission pending, as for ``router``.
        done_reads: the keys ``done`` reads.
        router: optional; extra activations decided from the board (see
            :data:`Router`).
        router_reads: the keys ``router`` reads (default: its ``reads`` attribute).
        summariser: name of the agent that summarises keys that grow too large.
        limits: loop, budget and time limits.
        model: the model agents get in their context (see ``blackboard.agents.models``).
        prices: USD per million input and output tokens by model name (or
            ``provider:model``), overriding the price library; with ``limits.max_cost``
            set, every model of the app must have a price from here or the library.
    """

    board: type[BaseModel]
    agents: Sequence[Agent]
    start: Sequence[str] = ()
    policies: Sequence[Policy] = ()
    audits: Sequence[Audit] = ()
    gates: Sequence[Gate] = ()
    done: Check | None = None
    done_reads: Sequence[str] = ()
    router: Router | None = None
    router_reads: Sequence[str] = ()
    summariser: str | None = None
    limits: Limits = field(default_factory=Limits)
    model: Any = None
    tools: Any = None
    name: str = ""
    prices: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    schema: BoardSchema = field(init=False)
    pricing: Prices = field(init=False, repr=False)
    """The prices the runtime counts cost with: ``prices`` over the library's."""

    def __post_init__(self) -> None:
        self.schema = BoardSchema.from_model(self.board)
        self.name = self.name or self.schema.name
        self._agents: dict[str, Agent] = {}
        for a in self.agents:
            if not a.name:
                raise ConfigError(
                    "an agent has no name; set `name` on the class or pass it to @agent(...)."
                )
            check_name("agent", a.name)
            if a.name in self._agents:
                raise ConfigError(f"two agents are named {a.name!r}; names must be unique.")
            if a.name in (SUPERVISOR, HUMAN):
                raise ConfigError(f"{a.name!r} is reserved; give the agent another name.")
            self._agents[a.name] = a
        if self.router is not None and not self.router_reads:
            self.router_reads = list(getattr(self.router, "reads", ()))
        self._check_ownership()
        self._check_reads()
        for a in self.agents:
            a.bind(self)
        self._check_prices()

    # -- build-time checks ----------------------------------------------------------

    def _check_ownership(self) -> None:
        owners = self.schema.owners()
        for owner, keys in owners.items():
            if owner not in self._agents and owner not in (SUPERVISOR, HUMAN):
                raise ConfigError(
                    f"keys {', '.join(keys)} are owned by {owner!r}, which is not an agent "
                    f"of the app (agents: {', '.join(sorted(self._agents))}); add the agent "
                    "or fix the owner."
                )
        for a in self.agents:
            given = tuple(owners.get(a.name, ()))
            for key in a.owns:
                self._known(key, f"agent {a.name!r} owns")
                if key not in given:
                    raise ConfigError(
                        f"agent {a.name!r} declares it owns {key!r}, but the board model "
                        f"gives that key to {self.schema.owner(key)!r}; a key has exactly "
                        "one owner."
                    )
            if not a.owns:
                a.owns = given
        if self.summariser is not None and self.summariser not in self._agents:
            raise ConfigError(f"summariser {self.summariser!r} is not an agent of the app.")
        for name in self.start:
            self.agent(name)

    def _check_reads(self) -> None:
        for a in self.agents:
            for key in a.reads:
                self._known(key, f"agent {a.name!r} reads")
            for trig in a.triggers:
                for key in trig.watches:
                    self._known(key, f"a trigger of agent {a.name!r} watches")
            for target in a.handoffs or ():
                if target not in self._agents:
                    raise ConfigError(
                        f"agent {a.name!r} may hand off to {target!r}, which "
                        "is not an agent of the app."
                    )
        for kind, items in (
            ("policy", self.policies),
            ("audit", self.audits),
            ("gate", self.gates),
        ):
            for item in items:
                for key in item.reads:
                    self._known(key, f"{kind} {item.name!r} reads")
        for key in (*self.done_reads, *self.router_reads):
            self._known(key, "the app's done/router condition reads")

    def _check_prices(self) -> None:
        # Imported here: the agents package imports this module.
        from blackboard.agents.pricing import Prices

        self.pricing = Prices(dict(self.prices))
        if self.limits.max_cost is None:
            return
        for model in self.models():
            name, provider = str(model.name), getattr(model, "provider", None)
            if self.pricing.price(name, provider) is None:
                raise ConfigError(
                    f"limits.max_cost is set, but no price is known for model {name!r}"
                    f"{f' of {provider}' if provider else ''}, so its cost would count as "
                    f"$0 and the budget would never trip. Price it in the app: "
                    f"App(prices={{{name!r}: (USD_PER_MILLION_IN, USD_PER_MILLION_OUT)}}), "
                    "or install 'redis-blackboard[prices]' if the price library knows it."
                )

    def models(self) -> list[Any]:
        """Every model of the app: its own and those its agents carry."""
        found = [self.model] if self.model is not None else []
        found += [a.model for a in self.agents if a.model is not None]
        return found

    def _known(self, key: str, who: str) -> None:
        if key not in self.schema.keys:
            raise ConfigError(
                f"{who} {key!r}, which is not a key of board "
                f"{self.schema.name} ({', '.join(self.schema.keys)})."
            )

    def with_model(self, model: Any) -> App:
        """The same app on another model (e.g. from ``--model SPEC``), checked again."""
        return dataclasses.replace(self, model=model)

    # -- queries --------------------------------------------------------------------

    def agent(self, name: str) -> Agent:
        try:
            return self._agents[name]
        except KeyError:
            raise ConfigError(
                f"no agent named {name!r} in app {self.name}; agents are "
                f"{', '.join(sorted(self._agents))}."
            ) from None

    @property
    def agent_names(self) -> list[str]:
        return list(self._agents)

    def triggers_for(self, changed: Sequence[str]) -> list[tuple[Agent, Trigger]]:
        """Agents with a trigger watching a changed key (only those are evaluated)."""
        changed_set = set(changed)
        return [
            (a, t) for a in self.agents for t in a.triggers if changed_set.intersection(t.watches)
        ]

    def check_handoff(self, author: str, handoff: Handoff) -> str | None:
        """None if the handoff is acceptable, else why not."""
        if handoff.to not in self._agents:
            return (
                f"handoff to unknown agent {handoff.to!r}; agents are "
                f"{', '.join(sorted(self._agents))}"
            )
        allowed = self._agents[author].handoffs if author in self._agents else None
        if allowed is not None and handoff.to not in allowed:
            return f"agent {author!r} may hand off only to {', '.join(allowed)}, not {handoff.to!r}"
        return None

    def summary_threshold(self, key: str) -> tuple[int, int | None]:
        spec = self.schema.keys[key]
        return (
            spec.summary_bytes or self.limits.summary_bytes,
            spec.summary_tokens or self.limits.summary_tokens,
        )

    def declaration(self) -> dict[str, Any]:
        """What the supervisor publishes: enough to inspect boards without user code."""
        agents = {
            a.name: {
                "owns": list(a.owns),
                "reads": list(a.reads),
                "watches": sorted({k for t in a.triggers for k in t.watches}),
                "handoffs": None if a.handoffs is None else list(a.handoffs),
            }
            for a in self.agents
        }
        body = {
            "name": self.name,
            "schema": codec.loads(self.schema.to_json()),
            "agents": agents,
            "start": list(self.start),
            "policies": [{"name": p.name, "reads": list(p.reads)} for p in self.policies],
            "audits": [{"name": a.name, "reads": list(a.reads)} for a in self.audits],
            "gates": [{"name": g.name, "reads": list(g.reads)} for g in self.gates],
            "summariser": self.summariser,
            "tools": [t.name for t in getattr(self.tools, "tools", ())],
            "limits": self.limits.model_dump(),
        }
        body["digest"] = hashlib.sha256(codec.dumps(body).encode()).hexdigest()[:16]
        return body


def load_app(spec: str) -> App:
    """Import ``pkg.module:attribute`` and return the :class:`App` it names."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigError(
            f"--app {spec!r}: expected 'pkg.module:attribute', e.g. 'examples.loan:app'."
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"--app {spec!r}: cannot import {module_name!r} ({exc}); check "
            "the module path and PYTHONPATH."
        ) from exc
    app = getattr(module, attribute, None)
    if not isinstance(app, App):
        raise ConfigError(
            f"--app {spec!r}: {module_name}.{attribute} is "
            f"{type(app).__name__}, not a blackboard App."
        )
    return app
