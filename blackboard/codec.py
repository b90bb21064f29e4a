"""Encoding of everything stored: plain JSON, in one place. Nothing is pickled and no
value read from Redis is ever evaluated."""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from blackboard.errors import CorruptData, ValidationFailed

__all__ = [
    "approx_tokens",
    "canonical",
    "content_hash",
    "corrupt",
    "dumps",
    "fingerprint",
    "load_model",
    "loads",
    "utf8_len",
]

_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
# The C encoder behind _encoder, built once: json builds one (and a cycle-marker table)
# on every call, most of the cost of encoding a small patch. Without the marker table a
# cyclic value ends in RecursionError instead of json's ValueError (refused alike).
_make = getattr(json.encoder, "c_make_encoder", None)  # None without json's C speedups
_c_encode = (
    _make(None, _encoder.default, json.encoder.encode_basestring, None, ":", ",", *[False] * 3)
    if _make is not None
    else None
)


def dumps(value: Any) -> str:
    """Compact JSON. NaN and infinities are refused: they are not JSON."""
    try:
        # A plain number is written as the encoder writes it, without building one.
        if type(value) is int:
            return int.__repr__(value)
        if type(value) is float and math.isfinite(value):
            return float.__repr__(value)
        text = "".join(_c_encode(value, 0)) if _c_encode is not None else _encoder.encode(value)
        if not text.isascii():
            text.encode()  # a lone surrogate (seen in model output) is not valid UTF-8
        return text
    except (TypeError, ValueError, RecursionError) as exc:
        raise ValidationFailed(
            f"value is not JSON-serialisable: {exc}. Send plain JSON values "
            "(objects, arrays, strings, finite numbers, booleans, null).",
            rule="json",
            expected="a JSON value",
        ) from exc


def utf8_len(text: str) -> int:
    """The length of ``text`` in UTF-8 bytes (an ASCII text is not encoded to count it)."""
    return len(text) if text.isascii() else len(text.encode())


def loads(text: str, what: str = "a value") -> Any:
    """Decode a JSON text read from Redis. ``what``: what it is (``key 'x' of board
    'b'``), for the message if it does not decode.

    Raises:
        CorruptData: the text is not JSON, so this package did not write it.
    """
    try:
        return json.loads(text)
    except (TypeError, ValueError) as exc:
        raise corrupt(what, f"is not valid JSON ({exc})") from exc


_M = TypeVar("_M", bound=BaseModel)


def load_model(model: type[_M], text: str | bytes, what: str) -> _M:
    """Decode a record read from Redis (an outcome, an activation) into its model.

    Raises:
        CorruptData: ``text`` is not such a record.
    """
    try:
        return model.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        problem = f"is not a valid {model.__name__} ({where + ': ' if where else ''}{first['msg']})"
        raise corrupt(what, problem) from exc


def corrupt(what: str, problem: str) -> CorruptData:
    """The error for stored data that is not what this package writes."""
    return CorruptData(
        f"{what} stored in Redis {problem}: something other than this package wrote it, "
        "or it was damaged. Restore it from a backup or delete the board; check that "
        "nothing else writes under this key prefix."
    )


def approx_tokens(nbytes: int) -> int:
    """Token estimate of a JSON text of ``nbytes`` bytes: about four bytes per token.

    The commit script keeps the same estimate incrementally (ceil(bytes / 4) per key), so
    sizes never need a re-read of the board. Good enough for thresholds; not for billing.
    """
    return (nbytes + 3) // 4


def content_hash(text: str) -> str:
    """Short content hash (64 bits) used for board fingerprints, not for security."""
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def canonical(text: str) -> str:
    """The same JSON with object members sorted: equal content, equal text."""
    return json.dumps(loads(text), sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def fingerprint(text: str) -> str:
    """The content hash of a value written by :func:`dumps`, whatever its members' order.
    Without an object in it, such a text is already canonical: no need to parse it."""
    return content_hash(canonical(text) if "{" in text else text)
