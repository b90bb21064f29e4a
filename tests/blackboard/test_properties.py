"""Invariants under random sequences of commits and rollbacks (hypothesis).

For every sequence: replaying the log from version 0 gives the current state, undoing
it backwards gives every earlier state, and read-at-V equals the state that existed at V.
"""

from __future__ import annotations

import copy
import enum
import itertools
import json
from typing import Any

import jsonpatch
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from blackboard import BoardSchema, BoardStore, ConflictError, Proposal, ValidationFailed
from blackboard.history import replay
from blackboard.patch import _blind_plan, _full_plan

_ids = itertools.count()

text = st.text(alphabet='abcxyz é"\\', max_size=12)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("score"), st.integers(300, 850)),
        st.tuples(st.just("rating"), st.sampled_from(["low", "medium", "high", None])),
        st.tuples(st.just("note"), text),
        st.tuples(st.just("notes"), st.lists(text, max_size=4)),
        st.tuples(st.just("detail"), st.tuples(st.sampled_from("abc"), st.integers(-5, 5))),
        st.tuples(st.just("drop_detail"), st.sampled_from("abc")),
        st.tuples(st.just("remove_amount"), st.none()),
        st.tuples(st.just("amount"), st.floats(1, 1e6)),
        st.tuples(st.just("rollback"), st.floats(0, 1)),
        st.tuples(st.just("stale"), st.integers(300, 850)),
    ),
    min_size=1,
    max_size=25,
)


def proposal_for(step: tuple[str, Any], base: int) -> Proposal:
    kind, arg = step
    if kind == "score":
        return Proposal.updates("risk", base, {"credit_score": arg})
    if kind == "rating":
        return Proposal.updates("risk", base, {"risk_rating": arg})
    if kind == "note":
        return Proposal(
            author="docs", base=base, patch=[{"op": "add", "path": "/notes/-", "value": arg}]
        )
    if kind == "notes":
        return Proposal.updates("docs", base, {"notes": arg})
    if kind == "detail":
        return Proposal(
            author="risk",
            base=base,
            patch=[{"op": "add", "path": f"/details/{arg[0]}", "value": arg[1]}],
        )
    if kind == "drop_detail":
        return Proposal(
            author="risk", base=base, patch=[{"op": "remove", "path": f"/details/{arg}"}]
        )
    if kind == "remove_amount":
        return Proposal(author="docs", base=base, patch=[{"op": "remove", "path": "/loan_amount"}])
    assert kind == "amount"
    return Proposal.updates("docs", base, {"loan_amount": arg})


async def run_steps(store: BoardStore, schema: BoardSchema, seq: list[tuple[str, Any]]) -> None:
    board = f"prop-{next(_ids)}"
    await store.create(board, schema)
    states = [(await store.read(board)).data]
    for step in seq:
        version = len(states) - 1
        try:
            if step[0] == "rollback":
                await store.rollback(board, to=int(step[1] * version), author="supervisor")
            elif step[0] == "stale":
                if version == 0:
                    continue
                # A writer that read version 0 of a key changed since must conflict.
                await store.commit(board, Proposal.updates("risk", 0, {"credit_score": step[1]}))
            else:
                await store.commit(board, proposal_for(step, version))
        except (ConflictError, ValidationFailed):
            assert (await store.read(board)).data == states[-1]  # a refusal changes nothing
            continue
        state = await store.read(board)
        if state.version == len(states):
            states.append(state.data)
        assert state.version == len(states) - 1

    current = await store.read(board)
    log = await store.history(board)
    assert [e.version for e in log] == list(range(1, current.version + 1))
    assert replay(copy.deepcopy(states[0]), [e.patch for e in log]) == current.data
    backwards = current.data
    for entry in reversed(log):
        backwards = jsonpatch.apply_patch(backwards, entry.undo)
        assert backwards == states[entry.version - 1]
    for v, expected in enumerate(states):
        assert (await store.read(board, at=v)).data == expected


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(seq=steps)
async def test_log_replay_and_time_travel(
    store: BoardStore, loan_schema: BoardSchema, seq: list[tuple[str, Any]]
) -> None:
    await run_steps(store, loan_schema, seq)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)  # wider ones are refused (tests/blackboard/test_codec.py)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(json_values)
def test_fingerprint_is_the_hash_of_the_canonical_text(value: Any) -> None:
    from blackboard import codec

    text = codec.dumps(value)
    assert codec.fingerprint(text) == codec.content_hash(codec.canonical(text))
    if isinstance(value, dict):  # members in another order: the same fingerprint
        reordered = dict(reversed(list(value.items())))
        assert codec.fingerprint(codec.dumps(reordered)) == codec.fingerprint(text)


@given(json_values)
def test_dumps_writes_what_the_json_module_writes(value: Any) -> None:
    """Compact JSON, non-ASCII kept: numbers too, which skip the encoder."""
    import json

    from blackboard import codec

    expected = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    assert codec.dumps(value) == expected
    assert codec.loads(codec.dumps(value)) == json.loads(expected)


class Shown(float):
    def __repr__(self) -> str:
        return "shown"


class Counted(int):
    def __repr__(self) -> str:
        return "counted"


class Level(enum.IntEnum):
    HIGH = 3


@pytest.mark.parametrize(
    "value",
    [True, False, None, Shown(1.5), Counted(7), Level.HIGH, [Shown(2.5), Counted(1)], -0.0],
    ids=["true", "false", "null", "float subclass", "int subclass", "IntEnum", "in a list", "-0"],
)
def test_dumps_writes_what_the_json_module_writes_for_number_like_values(value: Any) -> None:
    import json

    from blackboard import codec

    expected = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    assert codec.dumps(value) == expected


@pytest.mark.parametrize(
    "value",
    [float("nan"), float("inf"), -float("inf"), 10**5000],
    ids=["nan", "inf", "-inf", "an int of 5001 digits"],
)
def test_dumps_refuses_numbers_json_cannot_hold(value: Any) -> None:
    from blackboard import codec
    from blackboard.errors import ValidationFailed

    with pytest.raises(ValidationFailed, match="not JSON-serialisable"):
        codec.dumps(value)


def test_dumps_refuses_a_cyclic_or_bottomless_value() -> None:
    from blackboard import codec
    from blackboard.errors import ValidationFailed

    cyclic: list[Any] = []
    cyclic.append(cyclic)
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    for value in (cyclic, {"a": cyclic}, deep):
        with pytest.raises(ValidationFailed, match="not JSON-serialisable: maximum recursion"):
            codec.dumps(value)


_paths = st.sampled_from(
    ["/credit_score", "/risk_rating", "/notes", "/notes/-", "/undeclared", "/~0x", "/a~1b",
     "credit_score", "a/b", "", "/", "//notes", 5, None, ["/notes"]]
)  # fmt: skip
_operations = st.one_of(
    st.fixed_dictionaries(
        {"op": st.sampled_from(["add", "replace", "remove", "move", "copy", "test", "Add"])},
        optional={"path": _paths, "value": st.integers() | st.none(), "from": _paths},
    ),
    st.sampled_from([{}, {"op": ["add"], "path": "/notes", "value": 1}, "add", None]),
)


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(patch=st.lists(_operations, min_size=1, max_size=4))
@example(patch=[{"op": "add", "path": "/a~1b", "value": 1}])
@example(patch=[{"op": "replace", "path": "/notes/-", "value": 1}])
@example(patch=[{"op": "add", "path": "a/b", "value": 1}])
@example(patch=[{"op": "test", "path": "/notes", "value": []}])
@example(patch=[{"op": "add", "path": "/undeclared", "value": 1}])
@example(patch=[{"op": "add", "path": "/notes", "value": 1}, {"op": "remove", "path": "/notes"}])
def test_the_blind_patch_shortcut_plans_as_the_full_reading_does(
    loan_schema: BoardSchema, patch: list[Any]
) -> None:
    """plan() reads a blind patch in one pass: the same plan as reading it in full, and
    no other patch taken for one (a malformed one is left to the full reading, which
    explains what is wrong)."""
    # A declaration read back from Redis is not checked for plain key names: one whose
    # keys need escaping in a path ("/a~1b" is key "a/b") must be read in full too.
    declared = json.loads(loan_schema.to_json())
    spec = declared["keys"]["notes"]
    declared["keys"].update({k: spec for k in ("a/b", "a~1b", "~0x", "notes/-", "/b")})
    odd = BoardSchema.from_json(json.dumps(declared))
    for schema in (loan_schema, odd):
        try:
            full = _full_plan(patch, schema)
        except ValidationFailed:
            assert _blind_plan(patch, schema) is None
            continue
        fast = _blind_plan(patch, schema)
        if schema is odd:  # a path to escape is left to the full reading
            assert fast is None or fast == full
        else:  # plain keys: every blind patch goes the short way
            assert fast == (full if full.blind else None)
