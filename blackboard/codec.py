"""Encoding of everything stored: plain JSON, in one place. Nothing is pickled and no
value read from Redis is ever evaluated.

orjson encodes and decodes: several times faster than the json module, and a step
encodes a patch, its undo, its author and each value it writes. The text stays byte for
byte what ``json.dumps(value, ensure_ascii=False, separators=(",", ":"))`` writes,
because stored texts are compared and hashed: a value equal to the stored text is no
change (here and in commit.lua), and content fingerprints and declaration digests are
hashes of texts, some written by earlier versions. Where orjson would write otherwise
(see :func:`_as_json_writes`) or cannot write a value (a float subclass, nesting deeper
than 254), the json module writes it."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any, TypeVar

import orjson
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

# orjson would write dataclasses and datetimes; they are not JSON values: passed on to the
# json module, which refuses them. (orjson does write an Enum member or a UUID, as its
# value, where the json module refuses them.)
_OPTIONS = (
    orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
)
# The json module, for what orjson would write otherwise. Without the cycle-marker table a
# cyclic value ends in RecursionError instead of ValueError: refused alike.
_JSON = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False, check_circular=False
)
_JSON_SORTED = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False, check_circular=False, sort_keys=True
)
_SHORT_EXPONENT = re.compile(r"\de-\d(?!\d)")


def dumps(value: Any) -> str:
    """Compact JSON, as the json module writes it. NaN and infinities are refused (they
    are not JSON), and so are integers beyond 64 bits (JSON readers, Redis' Lua among
    them, cannot hold them exactly; this module would read them back as floats)."""
    return _encode(value, _OPTIONS, _JSON)


def canonical(text: str) -> str:
    """The same JSON with object members sorted: equal content, equal text."""
    return _encode(loads(text), _OPTIONS | orjson.OPT_SORT_KEYS, _JSON_SORTED)


def _encode(value: Any, options: int, fallback: json.JSONEncoder) -> str:
    try:
        return _orjson_or_json(value, options, fallback)
    except (TypeError, ValueError, RecursionError) as exc:  # JSONEncodeError: a TypeError
        raise ValidationFailed(
            f"value is not JSON-serialisable: {exc}. Send plain JSON values (objects, "
            "arrays, strings, finite numbers, integers within 64 bits, booleans, null).",
            rule="json",
            expected="a JSON value",
        ) from exc


def _orjson_or_json(value: Any, options: int, fallback: json.JSONEncoder) -> str:
    try:
        text: str | None = orjson.dumps(value, option=options).decode()
    except orjson.JSONEncodeError as exc:
        if "64-bit" in str(exc):  # the json module would write it; nothing reads it back
            raise
        text = None
    if text is not None and _as_json_writes(text):
        return text
    text = fallback.encode(value)
    if not text.isascii():
        text.encode()  # a lone surrogate (seen in model output) is not valid UTF-8
    return text


def _as_json_writes(text: str) -> bool:
    """Whether ``text``, written by orjson, is what the json module writes: no ``null``
    (orjson writes NaN and infinities so, which json refuses) and no float with an
    exponent from -5 to -9 (json writes ``1e-05`` and ``1e-06``, orjson ``0.00001`` and
    ``1e-6``). A text that only looks so (a string saying "null") is written again by
    the json module: the same text, a little later."""
    if "null" in text or "0.0000" in text:
        return False
    return "e-" not in text or _SHORT_EXPONENT.search(text) is None


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
        return orjson.loads(text)
    except (TypeError, ValueError) as exc:  # orjson.JSONDecodeError is a ValueError
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


def fingerprint(text: str) -> str:
    """The content hash of a value written by :func:`dumps`, whatever its members' order.
    Without an object in it, such a text is already canonical: no need to parse it."""
    return content_hash(canonical(text) if "{" in text else text)
