"""What a model's tokens cost: the app's overrides, then a maintained price library,
then the small built-in table.

The library is ``genai-prices`` (the optional extra ``[prices]``), which tracks the
providers' published prices; without it the built-in table (:data:`COSTS`) answers, and
it also answers for names the library does not know (``offline``). A model none of them
knows has no price: an app with a cost budget must then price it (``App(prices=...)``),
or the budget would count $0 and never trip.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["COSTS", "Price", "Prices", "cost_of"]

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
    _library: dict[tuple[str, str | None], Price | None] = field(
        default_factory=dict, init=False, repr=False
    )

    def price(self, model: str, provider: str | None = None) -> Price | None:
        """The model's price, or None if nobody knows it."""
        if provider is not None and f"{provider}:{model}" in self.overrides:
            return self.overrides[f"{provider}:{model}"]
        if model in self.overrides:
            return self.overrides[model]
        key = (model, provider)
        if key not in self._library:
            self._library[key] = _from_library(model, provider)
        found = self._library[key]
        return found if found is not None else COSTS.get(model)

    def cost(self, model: str, provider: str | None, tokens_in: int, tokens_out: int) -> float:
        """USD for these tokens; 0 for a model with no known price (the app refuses a
        cost budget over such a model when it is built)."""
        per_in, per_out = self.price(model, provider) or (0.0, 0.0)
        return (tokens_in * per_in + tokens_out * per_out) / 1_000_000


def _from_library(model: str, provider: str | None) -> Price | None:
    try:
        from genai_prices import Usage, calc_price
    except ImportError:
        return None
    try:
        found = calc_price(
            Usage(input_tokens=_PROBE, output_tokens=_PROBE), model, provider_id=provider
        )
    except LookupError:
        return None
    scale = 1_000_000 / _PROBE
    return float(found.input_price) * scale, float(found.output_price) * scale


_DEFAULT = Prices()


def cost_of(model: str, tokens_in: int, tokens_out: int, provider: str | None = None) -> float:
    """USD for these tokens at the default prices (no app overrides)."""
    return _DEFAULT.cost(model, provider, tokens_in, tokens_out)
