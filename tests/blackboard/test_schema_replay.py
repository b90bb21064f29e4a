"""A schema built from a stored declaration alone, for replaying a log (import): it
describes the board as declared and accepts any JSON value, where one loaded with
``from_json`` refuses to validate."""

from __future__ import annotations

from typing import Annotated

import pytest
from pydantic import BaseModel, Field

from blackboard import BoardSchema, BoardStore, ConfigError, CorruptData, Key


class Case(BaseModel):
    amount: Annotated[int | None, Field(gt=0), Key("reader")] = None
    note: Annotated[str, Key("human")] = ""


def test_accepting_any_is_the_declaration_with_no_type_checks() -> None:
    declared = BoardSchema.from_model(Case)
    replay = BoardSchema.accepting_any(declared.to_json())
    assert (replay.name, replay.keys, replay.digest) == (
        declared.name,
        declared.keys,
        declared.digest,
    )
    replay.validate_json("amount", '"12k"')  # was validated when first committed
    with pytest.raises(ConfigError, match="cannot validate values"):
        BoardSchema.from_json(declared.to_json()).validate_json("amount", '"12k"')
    with pytest.raises(CorruptData, match="an export"):
        BoardSchema.accepting_any('{"name": "Case"}', "an export")


async def test_a_store_of_its_own_registers_it(store: BoardStore) -> None:
    replay = BoardStore(store.redis, store.settings)
    schema = BoardSchema.accepting_any(BoardSchema.from_model(Case).to_json())
    replay.register(schema)
    await replay.create("b1", schema, {"amount": 5})
    assert (await replay.read("b1")).data == {"amount": 5, "note": ""}
