"""One typed settings object, with environment overrides."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from blackboard.errors import ConfigError

__all__ = ["Settings"]

ENV_PREFIX = "BLACKBOARD_"


class Settings(BaseModel):
    """Everything a deployment may tune. Environment variables ``BLACKBOARD_<FIELD>``
    (upper case) override the defaults; explicit arguments override both."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    redis_url: str | None = None
    """``redis://``, ``rediss://`` or ``unix://`` URL of a real server. ``None`` runs the
    embedded in-process store (fakeredis with Lua): nothing to install or start."""

    fast_io: bool = True
    """Talk to a real server through this package's own I/O on redis-py's internals
    (:func:`~blackboard.connection.connect`): 1.4x the validated proposals/s of plain
    redis-py on the supervisor bench (``python -m bench --only io``). Used only
    where the installed redis-py has those internals; ``False`` (``BLACKBOARD_FAST_IO=0``)
    sends through plain redis-py pipelines."""

    key_prefix: str = Field(default="bb", pattern=r"^[A-Za-z0-9_.-]{1,32}$")
    """Prefix of every Redis key this library writes, so several deployments can share
    one server."""

    max_value_bytes: int = Field(default=1 << 20, ge=64, le=512 << 20)
    """Largest JSON encoding of one key's value that a commit may write. Agents' output is
    data from a model: bound it so one runaway answer cannot fill Redis."""

    max_patch_bytes: int = Field(default=4 << 20, ge=64, le=512 << 20)
    """Largest JSON encoding of one proposal's patch."""

    snapshot_min_bytes: int = Field(default=64 << 10, ge=1)
    """A snapshot is taken when the patch bytes logged since the last one exceed both the
    board's size and this floor. Reading any version then costs one snapshot read plus at
    most that many patch bytes, and snapshots add at most about one byte of storage per
    byte of patch."""

    conflict_retries: int = Field(default=5, ge=0, le=100)
    """How many times a store-computed commit (rollback) recomputes on fresh state after a
    concurrent commit got in first."""

    wait_replicas: int = Field(default=0, ge=0, le=16)
    """If > 0, every commit waits (Redis ``WAIT``) until this many replicas acknowledged
    it, for deployments that need durability beyond the primary's AOF policy."""

    wait_timeout_ms: int = Field(default=1000, ge=0)
    """Upper bound of that wait; a commit that times out is committed but reported."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``BLACKBOARD_*`` variables, then explicit non-``None`` overrides."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in cls.model_fields:
            raw = env.get(ENV_PREFIX + name.upper())
            if raw is not None and raw != "":
                values[name] = raw
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ConfigError(
                f"invalid setting {where!r}: {first['msg']}. Fix the argument or the "
                f"{ENV_PREFIX}{where.upper()} environment variable."
            ) from exc
