"""Reading a proposal's JSON Patch: which keys it writes and reads, and applying it to
just those keys.

A patch whose every operation sets or removes one whole key (``add``/``replace``/
``remove`` at ``/<key>``, each key once) is *blind*: its result does not depend on the
old values, so the commit script can apply it in one round trip and record the undo
itself. Any other patch is applied here to the current values of the keys it touches,
fetched first; the commit script then re-checks that none of them changed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jsonpatch
import jsonpointer

from blackboard.errors import ValidationFailed
from blackboard.schema import BoardSchema

__all__ = ["PatchPlan", "apply_to", "inverse", "is_blind", "plan"]

_OPS = {"add", "remove", "replace", "move", "copy", "test"}
_BLIND_OPS = {"add", "replace", "remove"}


@dataclass(frozen=True)
class PatchPlan:
    ops: list[dict[str, Any]]
    writes: tuple[str, ...]
    """Keys the patch may change, in first-touched order."""
    reads: tuple[str, ...]
    """Keys whose current value the result depends on without writing them."""
    blind: bool


def _malformed(message: str) -> ValidationFailed:
    return ValidationFailed(
        f"malformed JSON Patch: {message}. Send a list of RFC 6902 operations, e.g. "
        '[{"op": "add", "path": "/key", "value": 1}].',
        rule="json_patch",
        expected="RFC 6902 operations on /<key> paths",
    )


def _top_key(pointer: Any, schema: BoardSchema, member: str) -> tuple[str, int]:
    if not isinstance(pointer, str):
        raise _malformed(f"{member!r} must be a string")
    if pointer.count("/") == 1 and pointer.startswith("/") and "~" not in pointer:
        schema.check_key(pointer[1:])  # "/<key>", nothing to unescape: the common case
        return pointer[1:], 1
    try:
        parts = jsonpointer.JsonPointer(pointer).parts
    except jsonpointer.JsonPointerException as exc:
        raise _malformed(f"{member} {pointer!r} is not a JSON pointer ({exc})") from exc
    if not parts:
        raise _malformed(f"{member} {pointer!r} targets the whole board; target a key")
    schema.check_key(parts[0])
    return parts[0], len(parts)


def plan(patch: Sequence[Mapping[str, Any]], schema: BoardSchema) -> PatchPlan:
    """Validate the patch's shape and the keys it names (not yet the values).

    Raises:
        ValidationFailed: malformed operation, or a path to an undeclared key.
    """
    if not isinstance(patch, Sequence) or isinstance(patch, (str, bytes)) or not patch:
        raise _malformed("expected a non-empty list of operations")
    return _blind_plan(patch, schema) or _full_plan(patch, schema)


def _full_plan(patch: Sequence[Mapping[str, Any]], schema: BoardSchema) -> PatchPlan:
    """Any patch, each operation checked and explained if it is malformed."""
    writes: dict[str, None] = {}
    reads: dict[str, None] = {}
    seen_whole: set[str] = set()
    blind = True
    ops: list[dict[str, Any]] = []
    for i, op in enumerate(patch):
        if not isinstance(op, Mapping) or not isinstance(op.get("op"), str) or op["op"] not in _OPS:
            raise _malformed(
                f"operation {i} must be an object whose 'op' is one of {', '.join(sorted(_OPS))}"
            )
        name = op["op"]
        key, depth = _top_key(op.get("path"), schema, f"operation {i} path")
        if name in ("add", "replace", "test") and "value" not in op:
            raise _malformed(f"operation {i} ({name}) has no 'value'")
        if name in ("move", "copy"):
            source, _ = _top_key(op.get("from"), schema, f"operation {i} from")
            (writes if name == "move" else reads)[source] = None
        if name == "test":
            reads[key] = None
        else:
            writes[key] = None
        if name not in _BLIND_OPS or depth != 1 or key in seen_whole:
            blind = False
        seen_whole.add(key)
        ops.append(dict(op))
    return PatchPlan(
        ops=ops,
        writes=tuple(writes),
        reads=tuple(k for k in reads if k not in writes),
        blind=blind,
    )


def _blind_plan(patch: Sequence[Any], schema: BoardSchema) -> PatchPlan | None:
    """The plan of a blind patch of declared keys (most patches: an agent sets its
    keys) in one pass, a third of :func:`_full_plan`'s time; None for any other patch,
    which that reads in full (and explains, if it is malformed)."""
    writes: dict[str, None] = {}
    ops: list[dict[str, Any]] = []
    declared = schema.keys
    for op in patch:
        if op.__class__ is not dict:
            return None
        name, path = op.get("op"), op.get("path")
        if (
            name.__class__ is not str
            or name not in _BLIND_OPS
            or path.__class__ is not str
            or path.count("/") != 1
            or path[:1] != "/"
            or "~" in path
        ):
            return None
        key = path[1:]
        if key in writes or key not in declared or (name != "remove" and "value" not in op):
            return None
        writes[key] = None
        ops.append(op.copy())
    return PatchPlan(ops=ops, writes=tuple(writes), reads=(), blind=True)


def is_blind(patch: Sequence[Mapping[str, Any]]) -> bool:
    """Whole-key set/remove operations, each key once (see the module docstring)."""
    seen: set[str] = set()
    for op in patch:
        path = op.get("path") if isinstance(op, Mapping) else None
        if (
            not isinstance(path, str)
            or not isinstance(op.get("op"), str)
            or op.get("op") not in _BLIND_OPS
            or path.count("/") != 1
            or not path.startswith("/")
            or "~" in path
            or path in seen
        ):
            return False
        seen.add(path)
    return bool(patch)


def apply_to(ops: list[dict[str, Any]], current: dict[str, Any]) -> dict[str, Any]:
    """Apply the patch to a dict holding the touched keys' current values (unset keys
    absent). Returns the new dict; ``current`` is not modified.

    Raises:
        ValidationFailed: the patch does not apply (missing path, failed test…).
    """
    try:
        result: dict[str, Any] = jsonpatch.apply_patch(current, ops, in_place=False)
    except jsonpatch.JsonPatchTestFailed as exc:
        raise ValidationFailed(
            f"a 'test' operation failed: {exc}. The board is not in the state the "
            "proposal assumed; re-read it and recompute.",
            rule="test_failed",
        ) from exc
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        raise ValidationFailed(
            f"the patch does not apply to the board: {exc}. Check the paths against "
            "the board's current content.",
            rule="json_patch",
        ) from exc
    return result


def inverse(before: dict[str, Any], after: dict[str, Any]) -> list[dict[str, Any]]:
    """A patch taking ``after`` back to ``before`` (both restricted to changed keys)."""
    ops: list[dict[str, Any]] = jsonpatch.make_patch(after, before).patch
    return ops
