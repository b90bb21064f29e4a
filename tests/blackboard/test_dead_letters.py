"""A dead letter retried goes back on its stream and leaves the dead letters in one
transaction: retried twice at once, it is re-queued once."""

from __future__ import annotations

import asyncio

import pytest

from blackboard import BoardStore
from blackboard.dead_letters import retry_dead_letter
from blackboard.errors import CorruptData
from blackboard.keys import GlobalKeys


async def test_a_dead_letter_retried_twice_at_once_is_requeued_once(store: BoardStore) -> None:
    keys = GlobalKeys(store.settings.key_prefix)
    letter = await store.redis.xadd(
        keys.dead_letters, {"dl_stream": keys.queue("risk"), "dl_reason": "x", "activation": "a1"}
    )
    answers = await asyncio.gather(
        retry_dead_letter(store.redis, keys.dead_letters, letter),
        retry_dead_letter(store.redis, keys.dead_letters, letter),
    )
    [new_id] = [a for a in answers if a is not None]
    assert answers.count(None) == 1
    assert await store.redis.xrange(keys.queue("risk")) == [(new_id, {"activation": "a1"})]
    assert await store.redis.xlen(keys.dead_letters) == 0
    assert await retry_dead_letter(store.redis, keys.dead_letters, letter) is None


async def test_a_dead_letter_that_names_no_stream_is_left_alone(store: BoardStore) -> None:
    keys = GlobalKeys(store.settings.key_prefix)
    letter = await store.redis.xadd(keys.dead_letters, {"activation": "a1"})
    with pytest.raises(CorruptData, match=f"dead letter {letter} has no dl_stream field"):
        await retry_dead_letter(store.redis, keys.dead_letters, letter)
    assert await store.redis.xlen(keys.dead_letters) == 1
