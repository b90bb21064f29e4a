"""A real adapter inside the runtime, against the scripted server: the provider's usage is
what the activation records, and a 429's Retry-After is what the retry waits. Embedded,
on both backends."""

from __future__ import annotations

import time
from typing import Any

import pytest
from bbtest import activations, build_app, incidents
from blackboard.agents import Context, Output, agent
from blackboard.agents.providers import OpenAIModel
from llmdeploy import run
from llmstub import LLMStub, openai_error, openai_text

from blackboard import BoardStore, Limits


def asking_app(model: Any, **overrides: Any) -> Any:
    @agent("intake")
    async def intake(ctx: Context) -> Output:
        answer = await ctx.model.complete([{"role": "user", "content": "What amount?"}])
        return Output(updates={"amount": float(answer.text), "income": 90_000.0})

    base = build_app()
    others = [a for a in base.agents if a.name != "intake"]
    return build_app(agents=[intake, *others], model=model, **overrides)


async def test_the_activation_records_the_providers_usage(
    store: BoardStore, gpt: OpenAIModel, llm_stub: LLMStub
) -> None:
    llm_stub.script(openai_text("50000", tokens=(1000, 200)))
    info = await run(asking_app(gpt), store)
    assert info.status == "done"
    intake = next(a for a in await activations(store, "c1") if a["agent"] == "intake")
    assert (intake["tokens_in"], intake["tokens_out"]) == (1000, 200)
    # gpt-4o-mini: $0.15 / $0.60 per million tokens.
    assert intake["cost"] == pytest.approx((1000 * 0.15 + 200 * 0.60) / 1e6)


async def test_the_activation_prices_cached_prompt_tokens_at_the_cache_price(
    store: BoardStore, gpt: OpenAIModel, llm_stub: LLMStub
) -> None:
    from genai_prices import Usage, calc_price

    llm_stub.script(openai_text("50000", tokens=(100_000, 200), cached=80_000))
    info = await run(asking_app(gpt), store)
    assert info.status == "done"
    intake = next(a for a in await activations(store, "c1") if a["agent"] == "intake")
    usage = Usage(input_tokens=100_000, cache_read_tokens=80_000, output_tokens=200)
    price = calc_price(usage, "gpt-4o-mini", provider_id="openai")
    assert intake["cost"] == pytest.approx(float(price.total_price))


async def test_a_429_is_retried_after_its_retry_after(
    store: BoardStore, gpt: OpenAIModel, llm_stub: LLMStub
) -> None:
    llm_stub.script(
        openai_error(429, "Rate limit reached", retry_after="0.4", kind="rate_limit"),
        openai_text("50000"),
    )
    info = await run(asking_app(gpt), store)
    assert info.status == "done"
    first, second = llm_stub.requests
    assert second.at - first.at >= 0.4
    intake = next(a for a in await activations(store, "c1") if a["agent"] == "intake")
    assert (intake["retries"], intake["status"]) == (1, "submitted")


@pytest.mark.parametrize("attempts_before", [0, 1])
async def test_a_retry_after_past_the_deadline_is_a_timeout_not_a_sleep_past_it(
    store: BoardStore, gpt: OpenAIModel, llm_stub: LLMStub, attempts_before: int
) -> None:
    # A first 503 (no Retry-After) puts the 429 on the retry machinery's later path.
    llm_stub.script(
        *[openai_error(503, "busy", kind="server_error")] * attempts_before,
        openai_error(429, "Rate limit reached", retry_after="30", kind="rate_limit"),
    )
    started = time.monotonic()
    info = await run(asking_app(gpt, limits=Limits(activation_timeout_s=3)), store)
    assert time.monotonic() - started < 2.5  # it did not sleep to the deadline, nor past it
    assert len(llm_stub.requests) == attempts_before + 1
    assert info.status == "escalated"
    intake = next(a for a in await activations(store, "c1") if a["agent"] == "intake")
    assert intake["outcome"] == "timeout"
    assert intake["retries"] == attempts_before
    [incident] = await incidents(store, "c1")
    assert (
        "not retried: the provider asked to wait 30 s before the next attempt"
        in (incident["detail"])
    )
    assert "HTTP 429: Rate limit reached" in incident["detail"]


async def test_the_apps_prices_override_the_library(
    store: BoardStore, gpt: OpenAIModel, llm_stub: LLMStub
) -> None:
    llm_stub.script(openai_text("50000", tokens=(1_000_000, 500_000)))
    info = await run(asking_app(gpt, prices={"openai:gpt-4o-mini": (1.0, 4.0)}), store)
    assert info.status == "done"
    intake = next(a for a in await activations(store, "c1") if a["agent"] == "intake")
    assert intake["cost"] == pytest.approx(3.0)


async def test_a_cost_budget_trips_on_a_priced_model(
    store: BoardStore, gpt: OpenAIModel, llm_stub: LLMStub
) -> None:
    llm_stub.script(openai_text("50000", tokens=(2_000_000, 100_000)))  # $0.36
    info = await run(asking_app(gpt, limits=Limits(max_cost=0.25)), store)
    assert info.status == "escalated"
    [incident] = await incidents(store, "c1")
    assert incident["kind"] == "budget" and "max_cost 0.25" in incident["detail"]
