"""The codec on orjson: byte for byte what the json module writes (stored texts are
compared and hashed, some written by earlier versions), the same refusals, and exact
round trips."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import math
import random
import struct
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from blackboard import codec
from blackboard.errors import CorruptData, ValidationFailed


def as_json(value: Any, sort_keys: bool = False) -> str:
    return json.dumps(
        value, ensure_ascii=False, separators=(",", ":"), allow_nan=False, sort_keys=sort_keys
    )


def every_kind_of_float() -> list[float]:
    """Floats of every decimal exponent (where orjson and json differ: -5 to -9), and
    random bit patterns."""
    rng = random.Random(22)
    floats = [m * 10.0**e for e in range(-320, 308) for m in (1, -1.5, 3.0000000000000004)]
    floats += [
        struct.unpack("d", rng.getrandbits(64).to_bytes(8, "little"))[0] for _ in range(20_000)
    ]
    return [f for f in floats if math.isfinite(f)]


def test_every_float_is_written_as_the_json_module_writes_it() -> None:
    floats = every_kind_of_float()
    for f in floats:
        assert codec.dumps(f) == repr(f)
    assert codec.dumps(floats) == as_json(floats)
    assert codec.dumps({"x": floats}) == as_json({"x": floats})


small = st.floats(min_value=1e-10, max_value=1e-4) | st.floats(min_value=-1e-4, max_value=-1e-10)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | small
    | st.text()
    | st.sampled_from(["null", "1e-5", "0.00001", "x1e-6y", "é", "\u2028", "\x00"])
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=16,
)


@given(values)
@example({"b": [1e-05, None], "a": "e-7", "c": 2**64 - 1})
@example([[[[1.5e-9]]]])
def test_dumps_canonical_and_loads_agree_with_the_json_module(value: Any) -> None:
    text = codec.dumps(value)
    assert text == as_json(value)
    assert codec.canonical(text) == as_json(json.loads(text), sort_keys=True)
    assert codec.loads(text) == json.loads(text)


class Level(enum.IntEnum):
    HIGH = 3


class Label(enum.StrEnum):
    RED = "red"


class Price(float):  # a float subclass (numpy's float64 is one): orjson cannot write it
    pass


@pytest.mark.parametrize(
    "value",
    [
        {1: "a", 2.5: "b", False: "c", None: "d", 1e-05: "e"},  # non-string keys
        {Level.HIGH: Label.RED, "l": [Level.HIGH]},
        [Price(2.5), Price(1e-07)],
        Price(1e-05),
        "a string that says null",
    ],
    ids=["keys", "enums", "float subclass", "float subclass alone", "null in a string"],
)
def test_values_orjson_writes_otherwise_are_written_as_json_writes_them(value: Any) -> None:
    assert codec.dumps(value) == as_json(value)


def test_nesting_deeper_than_orjson_goes_is_still_written() -> None:
    deep: Any = 1
    for _ in range(400):  # orjson stops at 254 levels; json goes on to the recursion limit
        deep = {"k": [deep]}
    text = codec.dumps(deep)
    assert text == as_json(deep) and codec.loads(text) == deep


@dataclasses.dataclass
class Point:
    x: int


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (2**64, "Integer exceeds 64-bit range"),
        (-(2**63) - 1, "Integer exceeds 64-bit range"),
        ({"n": [1, 2**70]}, "Integer exceeds 64-bit range"),
        ([1.0, float("nan")], "Out of range float"),
        ({"x": -float("inf")}, "Out of range float"),
        ({"when": datetime.datetime(2026, 1, 1)}, "not JSON serializable"),
        ([Point(1)], "not JSON serializable"),
        ({1, 2}, "not JSON serializable"),
        ("lone \ud800 surrogate", "surrogate"),
    ],
    ids=["2**64", "below int64", "nested big int", "nan", "-inf", "datetime", "dataclass",
         "set", "lone surrogate"],
)  # fmt: skip
def test_what_json_cannot_hold_exactly_is_refused(value: Any, problem: str) -> None:
    """Beyond 64 bits an integer would come back a float (orjson reads it so, as do
    Redis' Lua and JavaScript): refused, where the json module wrote it."""
    with pytest.raises(ValidationFailed, match="not JSON-serialisable") as refused:
        codec.dumps(value)
    assert problem in str(refused.value)
    assert refused.value.rule == "json"


@pytest.mark.parametrize("text", ["{", "", "NaN", "[1]x", '"\\ud800"', "Infinity"], ids=repr)
def test_loads_refuses_what_dumps_never_writes(text: str) -> None:
    with pytest.raises(
        CorruptData, match=r"key 'k' of board 'b' stored in Redis is not valid JSON"
    ):
        codec.loads(text, "key 'k' of board 'b'")
