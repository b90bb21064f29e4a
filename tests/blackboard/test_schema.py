"""Declaring boards: misdeclarations fail when the schema is built, before anything runs."""

from __future__ import annotations

from typing import Annotated, Literal

import pytest
from pydantic import BaseModel, Field

from blackboard import BoardSchema, ConfigError, Key, ValidationFailed


def test_keys_owners_and_summarisable() -> None:
    class Case(BaseModel):
        transcript: Annotated[
            list[str], Key("research", summarisable=True, summary_bytes=4000)
        ] = []
        verdict: Annotated[Literal["go", "stop"] | None, Key("human")] = None

    schema = BoardSchema.from_model(Case)
    assert schema.owners() == {"research": ["transcript"], "human": ["verdict"]}
    assert schema.keys["transcript"].summarisable
    assert schema.keys["transcript"].summary_bytes == 4000
    assert schema.initial_state() == {"transcript": "[]", "verdict": "null"}


def test_required_key_starts_unset() -> None:
    class Case(BaseModel):
        amount: Annotated[int, Key("a")]

    assert BoardSchema.from_model(Case).initial_state() == {}


def test_key_without_owner() -> None:
    class Case(BaseModel):
        amount: int = 0

    with pytest.raises(ConfigError, match="key 'amount' of Case has no owner: mark it"):
        BoardSchema.from_model(Case)


def test_key_with_two_owners() -> None:
    class Case(BaseModel):
        amount: Annotated[int, Key("a"), Key("b")] = 0

    with pytest.raises(ConfigError, match="has more than one owner"):
        BoardSchema.from_model(Case)


def test_bad_owner_name_and_threshold() -> None:
    class BadOwner(BaseModel):
        amount: Annotated[int, Key("not ok!")] = 0

    class BadThreshold(BaseModel):
        amount: Annotated[int, Key("a", summary_bytes=0)] = 0

    with pytest.raises(ConfigError, match="not a valid name"):
        BoardSchema.from_model(BadOwner)
    with pytest.raises(ConfigError, match="threshold"):
        BoardSchema.from_model(BadThreshold)


def test_default_failing_its_type() -> None:
    class Case(BaseModel):
        score: Annotated[int, Field(ge=300), Key("a")] = 0

    with pytest.raises(ConfigError, match="default of key 'score'"):
        BoardSchema.from_model(Case)


def test_not_a_model_and_empty_model() -> None:
    class Empty(BaseModel):
        pass

    with pytest.raises(ConfigError, match="not a pydantic model"):
        BoardSchema.from_model(dict)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="declares no keys"):
        BoardSchema.from_model(Empty)


def test_digest_follows_content() -> None:
    class A(BaseModel):
        x: Annotated[int, Key("a")] = 0

    class B(BaseModel):
        x: Annotated[int, Key("b")] = 0

    assert BoardSchema.from_model(A).digest == BoardSchema.from_model(A).digest
    assert BoardSchema.from_model(A).digest != BoardSchema.from_model(B, name="A").digest


def test_round_trip_through_json_describes_but_cannot_validate() -> None:
    class Case(BaseModel):
        x: Annotated[int, Key("a")] = 0

    schema = BoardSchema.from_model(Case)
    loaded = BoardSchema.from_json(schema.to_json())
    assert loaded == schema
    schema.validate_json("x", "3")
    with pytest.raises(ValidationFailed):
        schema.validate_json("x", '"3"')  # strict: no coercion of strings to ints
    with pytest.raises(ConfigError, match="cannot validate"):
        loaded.validate_json("x", "3")
