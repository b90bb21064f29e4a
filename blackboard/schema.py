"""A board's declaration: its keys, their types and owners, which are summarisable.

Users write a pydantic model and mark every field with :class:`Key`::

    class Loan(BaseModel):
        loan_amount: Annotated[float | None, Field(gt=0), Key("document_analysis")] = None
        risk_rating: Annotated[Literal["low", "high"] | None, Key("risk")] = None

:meth:`BoardSchema.from_model` turns it into a declaration that is stored in Redis as
JSON (JSON Schema per key + ownership map + a content digest), so other processes and
the CLI can read it without importing Python code. Validation needs the Python model,
so a schema loaded back from JSON (:meth:`BoardSchema.from_json`) can describe a board
but not validate writes to it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, cast

from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic_core import PydanticUndefined

from blackboard import codec
from blackboard.errors import ConfigError, ValidationFailed
from blackboard.keys import NAME_PATTERN

__all__ = ["HUMAN", "SUPERVISOR", "BoardSchema", "Key", "KeySpec"]

SUPERVISOR = "supervisor"
"""Owner name for keys only the supervisor writes (status, decisions it computes)."""
HUMAN = "human"
"""Owner name for keys only a person writes (through the CLI or a gate)."""

# Matched whole (fullmatch): the scripts write key names into JSON unescaped.
_KEY_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


@dataclass(frozen=True)
class Key:
    """Marks a board model field as a key and declares who owns it.

    Attributes:
        owner: the one agent (or ``supervisor`` / ``human``) allowed to write the key.
        summarisable: whether the supervisor may replace the key's content by a summary
            when it grows past a threshold.
        summary_bytes: threshold in bytes of the key's JSON; default: the app's.
        summary_tokens: threshold in approximate tokens; default: the app's.
    """

    owner: str
    summarisable: bool = False
    summary_bytes: int | None = None
    summary_tokens: int | None = None


@dataclass(frozen=True)
class KeySpec:
    """One key as declared: what is stored in Redis about it."""

    name: str
    owner: str
    summarisable: bool
    summary_bytes: int | None
    summary_tokens: int | None
    json_schema: Mapping[str, Any]
    default: str | None
    """JSON of the initial value, or None if the key starts unset."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "summarisable": self.summarisable,
            "summary_bytes": self.summary_bytes,
            "summary_tokens": self.summary_tokens,
            "schema": dict(self.json_schema),
            "default": self.default,
        }


@dataclass(frozen=True)
class BoardSchema:
    """The declaration of one kind of board. Build it with :meth:`from_model`."""

    name: str
    keys: Mapping[str, KeySpec]
    digest: str
    model: type[BaseModel] | None = field(default=None, compare=False, repr=False)
    _adapters: Mapping[str, TypeAdapter[Any]] = field(
        default_factory=dict, compare=False, repr=False
    )

    @classmethod
    def from_model(cls, model: type[BaseModel], *, name: str | None = None) -> BoardSchema:
        """Declare a board from a pydantic model whose every field carries one :class:`Key`.

        Raises:
            ConfigError: a field has no owner or two, a name is not a plain identifier, or
                a default does not validate. Misdeclarations fail here, before anything runs.
        """
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise ConfigError(
                f"{model!r} is not a pydantic model class; declare the board "
                "as `class MyBoard(pydantic.BaseModel)`."
            )
        board_name = name or model.__name__
        specs: dict[str, KeySpec] = {}
        adapters: dict[str, TypeAdapter[Any]] = {}
        if not model.model_fields:
            raise ConfigError(f"board model {board_name} declares no keys; add fields.")
        for key_name, info in model.model_fields.items():
            if not _KEY_NAME.fullmatch(key_name):
                raise ConfigError(
                    f"key {key_name!r} of {board_name}: key names must be plain "
                    "identifiers of at most 64 characters."
                )
            markers = [m for m in info.metadata if isinstance(m, Key)]
            if len(markers) != 1:
                problem = "has no owner" if not markers else "has more than one owner"
                raise ConfigError(
                    f"key {key_name!r} of {board_name} {problem}: mark it with exactly one "
                    f"Key(owner=...), e.g. `{key_name}: Annotated[int | None, "
                    f"Key('agent_name')] = None`."
                )
            marker = markers[0]
            if not NAME_PATTERN.fullmatch(marker.owner):
                raise ConfigError(
                    f"owner {marker.owner!r} of key {key_name!r} is not a valid "
                    "name: use letters, digits, _ . - (start with a letter)."
                )
            for limit in (marker.summary_bytes, marker.summary_tokens):
                if limit is not None and limit <= 0:
                    raise ConfigError(f"summary threshold of key {key_name!r} must be > 0.")
            others = [m for m in info.metadata if not isinstance(m, Key)]
            annotation = Annotated[(info.annotation, *others)] if others else info.annotation
            adapter: TypeAdapter[Any] = TypeAdapter(cast(Any, annotation))
            default = cls._default_json(
                board_name, key_name, info.get_default(call_default_factory=True), adapter
            )
            specs[key_name] = KeySpec(
                name=key_name,
                owner=marker.owner,
                summarisable=marker.summarisable,
                summary_bytes=marker.summary_bytes,
                summary_tokens=marker.summary_tokens,
                json_schema=adapter.json_schema(),
                default=default,
            )
            adapters[key_name] = adapter
        digest = _digest(board_name, specs)
        return cls(board_name, specs, digest, model, adapters)

    @staticmethod
    def _default_json(board: str, key: str, default: Any, adapter: TypeAdapter[Any]) -> str | None:
        if default is PydanticUndefined:
            return None
        try:
            return adapter.dump_json(adapter.validate_python(default)).decode()
        except ValidationError as exc:
            raise ConfigError(
                f"default of key {key!r} of {board} fails the key's own type: "
                f"{exc.errors()[0]['msg']}. Fix the default."
            ) from exc

    @classmethod
    def from_json(cls, text: str, what: str = "a board declaration") -> BoardSchema:
        """A declaration read back from Redis: describes a board, cannot validate writes.

        Raises:
            CorruptData: ``text`` is not a declaration this package wrote.
        """
        data = codec.loads(text, what)
        try:
            specs = {
                k: KeySpec(
                    name=k,
                    owner=v["owner"],
                    summarisable=v["summarisable"],
                    summary_bytes=v["summary_bytes"],
                    summary_tokens=v["summary_tokens"],
                    json_schema=v["schema"],
                    default=v["default"],
                )
                for k, v in data["keys"].items()
            }
            return cls(data["name"], specs, data["digest"])
        except (KeyError, TypeError, AttributeError) as exc:
            raise codec.corrupt(what, f"lacks a declaration's fields ({exc!r})") from exc

    @classmethod
    def accepting_any(cls, text: str, what: str = "a board declaration") -> BoardSchema:
        """A stored declaration whose every key accepts any JSON value, with no pydantic
        model: for replaying a log whose writes were validated when first committed (an
        import). Register it only where nothing else writes (a store of its own).

        Raises:
            CorruptData: ``text`` is not a declaration this package wrote.
        """
        stored = cls.from_json(text, what)
        adapter: TypeAdapter[Any] = TypeAdapter(Any)
        return cls(
            stored.name,
            stored.keys,
            stored.digest,
            _AnyValues,
            {k: adapter for k in stored.keys},
        )

    def to_json(self) -> str:
        return codec.dumps(
            {
                "name": self.name,
                "digest": self.digest,
                "keys": {k: s.to_dict() for k, s in self.keys.items()},
                "owners": self.owners(),
            }
        )

    def owners(self) -> dict[str, list[str]]:
        """Owner name -> the keys it owns (the ownership map)."""
        result: dict[str, list[str]] = {}
        for spec in self.keys.values():
            result.setdefault(spec.owner, []).append(spec.name)
        return result

    def owner(self, key: str) -> str:
        return self.keys[key].owner

    def initial_state(self) -> dict[str, str]:
        """Key -> JSON of every key that has a default: the board at version 0."""
        return {k: s.default for k, s in self.keys.items() if s.default is not None}

    def check_key(self, key: str) -> KeySpec:
        spec = self.keys.get(key)
        if spec is None:
            raise ValidationFailed(
                f"board {self.name} has no key {key!r}; declared keys are "
                f"{', '.join(sorted(self.keys))}. Write only declared keys.",
                key=key,
                rule="unknown_key",
                expected="one of " + ", ".join(sorted(self.keys)),
            )
        return spec

    def validate_json(self, key: str, text: str) -> None:
        """Check a key's new JSON value against its type, strictly (no coercion: what is
        stored is exactly what the patch produced, so replaying the log reproduces it).

        Raises:
            ValidationFailed: with the key, the failing rule and the expected schema.
            ConfigError: this schema was loaded from JSON and has no Python types.
        """
        spec = self.check_key(key)
        adapter = self._adapters.get(key)
        if adapter is None:
            raise ConfigError(
                f"board {self.name} was loaded from its stored declaration, which cannot "
                "validate values; build the schema from the board model "
                "(BoardSchema.from_model) in this process."
            )
        try:
            adapter.validate_json(text, strict=True)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = "/".join(str(p) for p in err["loc"])
            at = f" at {key}/{where}" if where else ""
            expected = codec.dumps(spec.json_schema)
            if len(expected) > 200:
                expected = expected[:197] + "..."
            raise ValidationFailed(
                f"value of key {key!r} fails its type{at}: {err['msg']}. Expected {expected}; "
                "fix the value and propose again.",
                key=key,
                rule=f"type:{err['type']}",
                expected=expected,
            ) from exc


class _AnyValues(BaseModel):
    """Stands in for the board model of a schema :meth:`BoardSchema.accepting_any`
    builds (one with a model can be registered to validate writes)."""


def _digest(name: str, specs: Mapping[str, KeySpec]) -> str:
    canonical = codec.dumps({"name": name, "keys": {k: specs[k].to_dict() for k in sorted(specs)}})
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]
