"""What both adapters share: their SDK's import, the API key, and one client per loop,
made with the runtime's policy. Setting a client up lives here and nowhere else."""

from __future__ import annotations

import asyncio
import importlib
import os
from collections.abc import Callable
from types import ModuleType
from typing import Any, Generic, Protocol, TypeVar

from blackboard.errors import ConfigError

__all__ = ["SDK", "PerLoop", "api_key", "missing_sdk"]


class _Client(Protocol):
    async def close(self) -> None: ...


T = TypeVar("T", bound=_Client)


def missing_sdk(package: str, exc: ImportError) -> ConfigError:
    """The error for an adapter whose SDK (an optional extra) is not installed."""
    return ConfigError(
        f"the {package!r} package is not installed ({exc}); install the extra with "
        f"`pip install 'redis-blackboard[{package}]'` to use {package} models."
    )


def api_key(explicit: str | None, variable: str, *, required: bool) -> str | None:
    """The key: given explicitly, else from the environment; never from the board."""
    if explicit:
        return explicit
    key = os.environ.get(variable) or None
    if key is None and required:
        raise ConfigError(
            f"{variable} is not set: export it (or pass api_key=...) to use this model. "
            "Keys come from the environment, never from the board."
        )
    return key


class PerLoop(Generic[T]):
    """A client made on first use in each event loop: an SDK client's connection pool
    belongs to the loop that opened it, and an app's model (built at import time) may
    serve several loops in turn (tests, ``run_sync`` called twice)."""

    def __init__(self, make: Callable[[], T], given: T | None = None) -> None:
        self._make = make
        self._given = given
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: T | None = None

    def get(self) -> T:
        if self._given is not None:
            return self._given
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client, self._loop = self._make(), loop
        return self._client

    async def aclose(self) -> None:
        """Close the client made here (a given one is its owner's to close)."""
        client, self._client, self._loop = self._client, None, None
        if client is not None:
            await client.close()


class SDK:
    """One provider's official SDK as an adapter uses it.

    Args:
        package: the SDK's module (``openai``, ``anthropic``), an optional extra.
        client_class: its async client (``AsyncOpenAI``…).
        key: the key to send (see :func:`api_key`).
        base_url: None: the provider's own API.
        timeout: seconds one request may take.
        client: a client to use instead of one made here (its owner closes it).

    Raises:
        ConfigError: the SDK is not installed (the message names the extra).
    """

    def __init__(
        self,
        package: str,
        client_class: str,
        *,
        key: str | None,
        base_url: str | None,
        timeout: float,
        client: Any = None,
    ) -> None:
        try:
            self.module: ModuleType = importlib.import_module(package)
        except ImportError as exc:
            raise missing_sdk(package, exc) from exc
        self._class = getattr(self.module, client_class)
        self._settings = {"api_key": key, "base_url": base_url, "timeout": timeout}
        self._clients: PerLoop[Any] = PerLoop(self._make, client)

    def _make(self) -> Any:
        # The runtime's retry policy (bounded by the activation's deadline, honouring
        # Retry-After) is the only one: the SDK's own retries would hide the 429s from it.
        return self._class(**self._settings, max_retries=0)

    def client(self) -> Any:
        """This loop's client."""
        return self._clients.get()

    async def aclose(self) -> None:
        await self._clients.aclose()
