"""The command group and what every command shares: options, the store, output, errors."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click
from rich.console import Console

from blackboard.config import Settings
from blackboard.errors import BlackboardError, ConfigError, StoreUnavailable
from blackboard.store import BoardStore

__all__ = ["Ctx", "emit", "main", "run_async"]

T = TypeVar("T")
EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3


class Ctx:
    """Options shared by every command."""

    def __init__(self, redis: str | None, debug: bool) -> None:
        self.redis = redis
        self.debug = debug
        self._stores: list[BoardStore] = []
        # Tables fit an 80-column terminal; a wider terminal gets its own width.
        self.console = Console(width=None if sys.stdout.isatty() else 80, highlight=False)
        self.progress = Console(stderr=True)

    def store(self, *, embedded_ok: bool = False) -> BoardStore:
        if self.redis is None and not embedded_ok:
            raise ConfigError(
                "no Redis to inspect: pass --redis URL or set BLACKBOARD_REDIS_URL (the "
                "embedded store lives only inside the process that runs it)."
            )
        store = BoardStore.from_url(self.redis, Settings.from_env(redis_url=self.redis))
        self._stores.append(store)
        return store

    async def close(self) -> None:
        """Close every store a command opened, whatever happened in it (so commands
        never close their own)."""
        while self._stores:
            await self._stores.pop().close()


def run_async(ctx: Ctx, fn: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine; map errors to one line on stderr and the documented exit code."""

    async def guarded() -> T:
        try:
            return await fn()
        finally:
            await ctx.close()

    try:
        return asyncio.run(guarded())
    except BlackboardError as exc:
        if ctx.debug:
            raise
        code = EXIT_FAILED
        if isinstance(exc, StoreUnavailable):
            code = EXIT_UNREACHABLE
        elif isinstance(exc, ConfigError):
            code = EXIT_USAGE
        click.echo(f"error: {exc}", err=True)
        sys.exit(code)
    except KeyboardInterrupt:
        sys.exit(130)


def emit(ctx: Ctx, data: Any, as_json: bool, render: Callable[[], None]) -> None:
    """Print ``data`` as JSON (stable shape) or through the rich ``render``."""
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))
    else:
        render()


@click.group()
@click.option(
    "--redis",
    "redis_url",
    envvar="BLACKBOARD_REDIS_URL",
    default=None,
    help="redis:// or unix:// URL (default: BLACKBOARD_REDIS_URL).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.version_option(package_name="redis-blackboard")
@click.pass_context
def main(click_ctx: click.Context, redis_url: str | None, debug: bool) -> None:
    """Blackboard: validated, versioned shared state for AI agents, on Redis."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    click_ctx.obj = Ctx(redis_url, debug)
