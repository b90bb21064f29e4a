"""Prices: the app's overrides, then the maintained price library, then the built-in
table; a cost budget over a model with no known price is refused when the app is built."""

from __future__ import annotations

import sys

import pytest
from bbtest import build_app
from blackboard.agents import OfflineModel, cost_of
from blackboard.agents.pricing import Prices
from blackboard.agents.providers import OpenAIModel

from blackboard import ConfigError, Limits


def test_current_models_are_priced_by_the_library() -> None:
    # Outside the built-in five-entry table: counted $0 before.
    assert cost_of("claude-sonnet-4-5", 1_000_000, 0, provider="anthropic") == pytest.approx(3.0)
    assert cost_of("gpt-4.1-mini", 0, 1_000_000, provider="openai") > 0
    assert Prices().price("claude-sonnet-4-5", "anthropic") == pytest.approx((3.0, 15.0))


def test_the_app_overrides_win_by_provider_and_model_or_by_model() -> None:
    prices = Prices({"gpt-4o-mini": (1.0, 2.0), "anthropic:claude-sonnet-4-5": (4.0, 5.0)})
    assert prices.price("gpt-4o-mini", "openai") == (1.0, 2.0)
    assert prices.price("claude-sonnet-4-5", "anthropic") == (4.0, 5.0)
    assert prices.cost("gpt-4o-mini", "openai", 500_000, 250_000) == pytest.approx(1.0)


def test_without_the_library_the_built_in_table_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "genai_prices", None)
    prices = Prices()
    assert prices.price("gpt-4o-mini", "openai") == (0.15, 0.60)
    assert prices.price("claude-sonnet-4-5", "anthropic") is None
    assert prices.price("offline") == (0.0, 0.0)


def test_unknown_models_have_no_price() -> None:
    assert Prices().price("llama3.1:8b") is None
    assert Prices().price("no-such-model", "openai") is None


def local_model() -> OpenAIModel:
    return OpenAIModel("llama3.1:8b", base_url="http://127.0.0.1:9/v1", provider=None)


def test_max_cost_with_an_unpriced_model_fails_when_the_app_is_built() -> None:
    with pytest.raises(ConfigError, match=r"no price is known for model 'llama3\.1:8b'") as caught:
        build_app(model=local_model(), limits=Limits(max_cost=1.0))
    assert "prices={'llama3.1:8b': (" in str(caught.value)


def test_max_cost_with_a_priced_model_builds() -> None:
    build_app(model=local_model(), limits=Limits(max_cost=1.0), prices={"llama3.1:8b": (0, 0)})
    build_app(model=OfflineModel(), limits=Limits(max_cost=1.0))
    build_app(model=OfflineModel(name="gpt-4o-mini"), limits=Limits(max_cost=1.0))
    build_app(model=local_model())  # no budget: nothing to count
