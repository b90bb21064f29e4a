"""What a model's tokens cost: the app's overrides, then a maintained price library,
then the small built-in table.

The library is ``genai-prices`` (the optional extra ``[prices]``), which tracks the
providers' published prices; without it the built-in table (:data:`COSTS`) answers, and
it also answers for names the library does not know (``offline``). A model none of them
knows has no price: an app with a cost budget must then price it (``App(prices=...)``),
or the budget would count $0 and never trip.

Cached prompt tokens (a cache read, or an Anthropic cache write) are priced at the
library's cache prices; an override or the built-in table gives none, so there they
cost as plain input (an upper bound for reads).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["COSTS", "DEFAULT_PRICES", "Price", "Prices", "cost_of"]

Price = tuple[float, float]
"""USD per million input tokens and per million output tokens."""

COSTS: dict[str, Price] = {
    "offline": (0.0, 0.0),
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-3-5-haiku": (0.80, 4.00),
}
"""The built-in table, by model name. Extend or override it."""

_PROBE = 1000
"""Tokens priced to read a per-million price off the library: few enough to stay in a
model's first tier (long-context tiers start far above it)."""


@dataclass
class Prices:
    """Looks prices up, remembering the library's answers (its data is fixed for the
    life of the process, and one look-up costs far more than a model step should).

    Args:
        overrides: ``model`` or ``provider:model`` -> price; these win.
    """

    overrides: Mapping[str, Price] = field(default_factory=dict)
    _rates: dict[tuple[str, str | None], _Rates | None] = field(
        default_factory=dict, init=False, repr=False
    )

    def price(self, model: str, provider: str | None = None) -> Price | None:
        """The model's price, or None if nobody knows it."""
        rates = self._lookup(model, provider)
        return None if rates is None else (rates.input, rates.output)

    def cost(
        self,
        model: str,
        provider: str | None,
        tokens_in: int,
        tokens_out: int,
        *,
        cache_read: int = 0,
        cache_write: int = 0,
    ) -> float:
        """USD for these tokens; 0 for a model with no known price (the app refuses a
        cost budget over such a model when it is built). ``tokens_in`` counts every
        prompt token; ``cache_read`` and ``cache_write`` say how many of them were read
        from or written to the provider's prompt cache."""
        rates = self._lookup(model, provider)
        if rates is None:
            return 0.0
        plain = tokens_in - cache_read - cache_write
        return (
            plain * rates.input
            + cache_read * rates.cache_read
            + cache_write * rates.cache_write
            + tokens_out * rates.output
        ) / 1_000_000

    def _lookup(self, model: str, provider: str | None) -> _Rates | None:
        key = (model, provider)
        if key not in self._rates:  # remembered: looked up once per model
            given = self.overrides.get(f"{provider}:{model}") if provider is not None else None
            given = given or self.overrides.get(model)
            found = _Rates.flat(given) if given is not None else _from_library(model, provider)
            if found is None and model in COSTS:
                found = _Rates.flat(COSTS[model])
            self._rates[key] = found
        return self._rates[key]


@dataclass(frozen=True)
class _Rates:
    """USD per million tokens of each kind."""

    input: float
    output: float
    cache_read: float
    cache_write: float

    @classmethod
    def flat(cls, price: Price) -> _Rates:
        """A price that says nothing of the cache: cached tokens cost as input."""
        return cls(price[0], price[1], price[0], price[0])


def _from_library(model: str, provider: str | None) -> _Rates | None:
    try:
        from genai_prices import Usage, calc_price
    except ImportError:
        return None

    def per_million(**usage: int) -> Any:
        return calc_price(Usage(**usage), model, provider_id=provider)

    try:
        plain = per_million(input_tokens=_PROBE, output_tokens=_PROBE)
        # Every input token a cache read (then a cache write): the input price is theirs.
        read = per_million(input_tokens=_PROBE, cache_read_tokens=_PROBE)
        write = per_million(input_tokens=_PROBE, cache_write_tokens=_PROBE)
    except LookupError:
        return None
    scale = 1_000_000 / _PROBE
    return _Rates(
        float(plain.input_price) * scale,
        float(plain.output_price) * scale,
        float(read.input_price) * scale,
        float(write.input_price) * scale,
    )


DEFAULT_PRICES = Prices()
"""The prices with no app overrides."""


def cost_of(model: str, tokens_in: int, tokens_out: int, provider: str | None = None) -> float:
    """USD for these tokens at the default prices (no app overrides)."""
    return DEFAULT_PRICES.cost(model, provider, tokens_in, tokens_out)
