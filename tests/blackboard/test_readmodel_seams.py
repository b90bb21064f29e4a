"""The read model's seams the CLI and ``Deployment.settle`` use instead of raw Redis
reads: one submission's outcome, the supervisor replicas' liveness, one dead letter, and
a board's activity with its metadata."""

from __future__ import annotations

import whyapp
from blackboard.supervisor import Deployment, Supervisor

from blackboard import BoardStore, ReadModel
from blackboard.keys import GlobalKeys
from blackboard.queues import Liveness, WorkQueue


async def test_one_outcome_is_the_one_in_all_outcomes(store: BoardStore) -> None:
    async with Deployment(whyapp.app, store) as d:
        await d.start("policy", {"brief": {"case": "policy"}})
        await d.settle("policy")
    reads = ReadModel(store)
    every = await reads.outcomes("policy")
    assert sorted(o.status for o in every.values()) == ["committed"] * 3 + ["rejected"]
    for proposal_id, outcome in every.items():
        assert await reads.outcome("policy", proposal_id) == outcome
    assert await reads.outcome("policy", "not-decided-yet") is None


async def test_supervisors_with_their_liveness(store: BoardStore) -> None:
    reads = ReadModel(store)
    assert await reads.supervisors() == []
    keys = GlobalKeys(store.settings.key_prefix)
    await Liveness(store.redis, keys, "sup-host-1-abc").beat()
    await Liveness(store.redis, keys, "writer-host-1-abc").beat()  # an agent's, not one
    await store.redis.zadd(keys.consumers, {"sup-host-2-def": 1})  # beat once, long ago
    seen = await reads.supervisors()
    assert [(i.name, i.alive) for i in seen] == [
        ("sup-host-1-abc", True),
        ("sup-host-2-def", False),
    ]


async def test_a_supervisor_is_seen_once_with_what_it_holds_on_every_stream_it_reads(
    store: BoardStore,
) -> None:
    await Supervisor(whyapp.app, store).publish()
    keys = GlobalKeys(store.settings.key_prefix)
    agent = whyapp.app.agent_names[0]
    held = {keys.submissions(agent, 0): 2, keys.commands(0): 1, keys.reports(0): 0}
    for stream, n in held.items():
        queue = WorkQueue(store.redis, stream, "supervisor", dead_letters=keys.dead_letters)
        for i in range(n):
            await queue.put({"n": i})
        assert len(await queue.take("sup-host-1-abc", count=10, block_ms=10)) == n
    await Liveness(store.redis, keys, "sup-host-1-abc").beat()
    [seen] = await ReadModel(store).supervisors()
    assert (seen.name, seen.alive, seen.in_flight) == ("sup-host-1-abc", True, 3)
    agents = await ReadModel(store).agents()
    assert agents is not None
    assert [(i.name, i.in_flight) for i in agents.supervisors] == [("sup-host-1-abc", 3)]


async def test_one_dead_letter_by_its_id(store: BoardStore) -> None:
    keys = GlobalKeys(store.settings.key_prefix)
    queue = WorkQueue(store.redis, keys.queue("writer"), "workers", dead_letters=keys.dead_letters)
    await queue.put({"board": "b1"})
    await queue.put({"board": "b2"})
    first, second = await queue.take("writer-1", count=2)
    await queue.dead_letter(first, "gave up")
    await queue.dead_letter(second, "gave up too")
    reads = ReadModel(store)
    both = await reads.dead_letters()
    assert [letter.reason for letter in both] == ["gave up", "gave up too"]
    assert await reads.dead_letters(both[1].id) == [both[1]]
    assert both[1].fields["board"] == "b2" and both[1].stream == queue.stream
    assert await reads.dead_letters("1-1") == []


async def test_activity_carries_the_boards_metadata(store: BoardStore) -> None:
    async with Deployment(whyapp.app, store) as d:
        await d.start("gate", {"brief": {"case": "gate"}})
        settled = await d.settle("gate")
    activity = await ReadModel(store).activity("gate")
    assert activity.info == settled == await store.info("gate")
    assert (activity.status, activity.version) == ("awaiting_approval", 2)
