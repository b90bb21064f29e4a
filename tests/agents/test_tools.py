"""Tools: an effect once per idempotency key (also after a timeout and across
concurrent callers), shared rate limits, a breaker operators can see, permissions, and
compensation of a failed board's side effects. Both backends."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from bbtest import activations, build_app, incidents
from blackboard.agents import Context, OfflineModel, Output, agent
from blackboard.agents.tools import Tool, ToolRegistry
from blackboard.supervisor import Deployment
from pydantic import BaseModel

from blackboard import BoardStore, FatalError, SemanticError, TransientError
from blackboard.keys import GlobalKeys


class Charge(BaseModel):
    account: str
    amount: int


class Receipt(BaseModel):
    receipt: str


def payments(delay: float = 0.0, fail: int = 0, **kw: Any) -> tuple[ToolRegistry, list[str]]:
    effects: list[str] = []
    failures = [fail]

    async def charge(c: Charge) -> Receipt:
        await asyncio.sleep(delay)
        if failures[0] > 0:
            failures[0] -= 1
            raise ConnectionError("bank unreachable")
        effects.append(f"charge {c.account} {c.amount}")
        return Receipt(receipt=f"r{len(effects)}")

    async def refund(c: Charge, r: Receipt) -> None:
        effects.append(f"refund {r.receipt}")

    tool = Tool("charge", charge, Charge, Receipt, side_effects=True, compensate=refund, **kw)
    return ToolRegistry([tool]), effects


def bound(registry: ToolRegistry, store: BoardStore, activation: str = "a1", agent: str = "x"):  # type: ignore[no-untyped-def]
    return registry.bind(
        store.redis, store.settings.key_prefix, agent=agent, board_id="b", activation_id=activation
    )


async def test_same_key_has_effect_once(store: BoardStore) -> None:
    registry, effects = payments()
    first = await bound(registry, store).call("charge", {"account": "A", "amount": 5})
    again = await bound(registry, store).call("charge", {"account": "A", "amount": 5})
    assert first == again == Receipt(receipt="r1")  # a redelivered activation repeats calls
    assert effects == ["charge A 5"]
    other = await bound(registry, store, activation="a2").call(
        "charge", {"account": "A", "amount": 5}
    )
    assert other == Receipt(receipt="r2") and len(effects) == 2


async def test_concurrent_duplicates_have_effect_once(store: BoardStore) -> None:
    registry, effects = payments(delay=0.05)
    results = await asyncio.gather(
        *(bound(registry, store).call("charge", {"account": "A", "amount": 5}) for _ in range(3))
    )
    assert {r.receipt for r in results} == {"r1"}
    assert effects == ["charge A 5"]


async def test_retry_after_timeout_collects_the_first_result(store: BoardStore) -> None:
    registry, effects = payments(delay=0.2, timeout_s=0.05)
    with pytest.raises(TransientError, match="retry with the same key"):
        await bound(registry, store).call("charge", {"account": "A", "amount": 5})
    deadline = asyncio.get_running_loop().time() + 5
    while True:  # the retry (same activation, same key) waits for it, never acts again
        try:
            result = await bound(registry, store).call("charge", {"account": "A", "amount": 5})
            break
        except TransientError:
            assert asyncio.get_running_loop().time() < deadline
    assert result == Receipt(receipt="r1") and effects == ["charge A 5"]


async def test_breaker_opens_and_is_visible(store: BoardStore) -> None:
    registry, effects = payments(fail=3, breaker_errors=2, breaker_reset_s=60)
    tools = bound(registry, store)
    for n in (1, 2):
        with pytest.raises(TransientError, match="bank unreachable"):
            await tools.call("charge", {"account": "A", "amount": n})
    with pytest.raises(TransientError, match="circuit breaker of tool 'charge' is open"):
        await tools.call("charge", {"account": "A", "amount": 3})
    state = await registry.breakers(store.redis, store.settings.key_prefix)
    assert state["charge"]["errors"] == 2 and state["charge"]["open_until_ms"] > 0
    assert effects == []


async def test_permissions_and_bad_arguments(store: BoardStore) -> None:
    registry, _ = payments(agents=("billing",))
    with pytest.raises(FatalError, match="may not call tool 'charge'"):
        await bound(registry, store, agent="intake").call("charge", {"account": "A", "amount": 1})
    with pytest.raises(SemanticError, match="do not match its input"):
        await bound(registry, store, agent="billing").call("charge", {"account": "A"})


async def test_rate_limit_in_one_process(store: BoardStore) -> None:
    calls = 0

    async def ping(_: Charge) -> Receipt:
        nonlocal calls
        calls += 1
        return Receipt(receipt="ok")

    registry = ToolRegistry([Tool("ping", ping, Charge, Receipt, rate_limit=(3, 0.3))])
    tools = bound(registry, store)
    window = GlobalKeys(store.settings.key_prefix).rate("ping")
    admitted: dict[str, float] = {}  # call -> when the limiter let it through (ms, Redis TIME)
    for _ in range(7):
        await tools.call("ping", {"account": "A", "amount": 1})
        admitted.update(await store.redis.zrange(window, 0, -1, withscores=True))
    assert calls == len(admitted) == 7
    # Any 4 consecutive admissions span at least the window. (Not the tool's own start
    # times: a busy machine can start one late, after the limiter let it through.)
    times = sorted(admitted.values())
    for i in range(len(times) - 3):
        assert times[i + 3] - times[i] >= 300


async def test_failed_board_compensates_in_reverse_order(store: BoardStore) -> None:
    registry, effects = payments()

    @agent("intake")
    async def intake(ctx: Context) -> Output:
        await ctx.tools.call("charge", {"account": "A", "amount": 10})
        await ctx.tools.call("charge", {"account": "B", "amount": 20})
        raise FatalError("the applicant withdrew")

    base = build_app()
    app = build_app(
        agents=[intake, *[a for a in base.agents if a.name != "intake"]], tools=registry
    )
    async with Deployment(app, store) as d:
        await d.start("c1")
        info = await d.settle("c1")
    assert info.status == "failed"
    assert effects == ["charge A 10", "charge B 20", "refund r2", "refund r1"]
    kinds = [(i["kind"], i["detail"]) for i in await incidents(store, "c1")]
    assert kinds[-1][0] == "compensated" and "charge:" in kinds[-1][1]
    record = (await activations(store, "c1"))[0]
    assert [c["tool"] for c in record["tool_calls"]] == ["charge", "charge"]


async def test_envelope_records_model_usage_and_output(store: BoardStore) -> None:
    model = OfflineModel(rules={"income": "90000"}, name="gpt-4o-mini")

    @agent("intake")
    async def intake(ctx: Context) -> Output:
        reply = await ctx.model.complete([{"role": "user", "content": "What is the income?"}])
        return Output(updates={"amount": 10.0, "income": float(reply.text)})

    base = build_app()
    app = build_app(agents=[intake, *[a for a in base.agents if a.name != "intake"]], model=model)
    async with Deployment(app, store) as d:
        await d.start("c1")
        info = await d.settle("c1")
    assert info.status == "done"
    record = (await activations(store, "c1"))[0]
    assert (record["tokens_in"], record["tokens_out"]) == (5, 2)
    assert record["cost"] == pytest.approx((5 * 0.15 + 2 * 0.60) / 1e6)
    assert record["output"]["patch"] == [
        {"op": "add", "path": "/amount", "value": 10.0},
        {"op": "add", "path": "/income", "value": 90000.0},
    ]
    assert set(record["keys_read"]) == {"amount", "income", "log"}
    meta = await store.redis.hmget(store.keys("c1").meta, ["tokens_used", "cost_used"])
    assert int(meta[0]) == 7
