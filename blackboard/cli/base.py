"""The command group and what every command shares: options, the store, output, errors."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click
from redis import exceptions as redis_errors
from rich.console import Console
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_delay,
    wait_exponential,
)

from blackboard.config import Settings
from blackboard.errors import BlackboardError, ConfigError, StoreUnavailable
from blackboard.store import BoardStore

__all__ = ["Ctx", "emit", "main", "run_async", "wait_for_redis", "wait_option"]

T = TypeVar("T")
EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 1, 2, 3

_UNREACHABLE = (redis_errors.ConnectionError, redis_errors.TimeoutError, OSError, TimeoutError)
"""What a connection attempt raises while the server is not (yet) there."""
_REFUSED = (redis_errors.AuthenticationError, redis_errors.AuthorizationError)
"""Connection errors that waiting cannot cure (subclasses of ConnectionError)."""


class Ctx:
    """Options shared by every command."""

    def __init__(self, redis: str | None, debug: bool) -> None:
        self.redis = redis
        self.debug = debug
        self._stores: list[BoardStore] = []
        # The terminal's width, else COLUMNS (a pipe too), else 80; tables wrap to it.
        self.console = _Console(width=shutil.get_terminal_size().columns, highlight=False)
        self.progress = Console(stderr=True)

    @property
    def shown_url(self) -> str:
        """The Redis URL for messages, its password masked."""
        if self.redis is None:
            return "(embedded)"
        parts = urlsplit(self.redis)
        if parts.password is None:
            return self.redis
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return parts._replace(netloc=netloc).geturl()

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
    except (redis_errors.ConnectionError, redis_errors.TimeoutError) as exc:
        # A command reading Redis directly (not through the store's wrapped calls).
        if ctx.debug:
            raise
        click.echo(
            f"error: Redis unreachable at {ctx.shown_url}: {_reason(exc)}. Check that the "
            "server is up and --redis / BLACKBOARD_REDIS_URL points at it.",
            err=True,
        )
        sys.exit(EXIT_UNREACHABLE)
    except redis_errors.RedisError as exc:
        if ctx.debug:
            raise
        click.echo(f"error: Redis at {ctx.shown_url} refused: {_reason(exc)}.", err=True)
        sys.exit(EXIT_FAILED)
    except KeyboardInterrupt:
        click.echo(f"interrupted: stopped at {time.strftime('%H:%M:%S')}.", err=True)
        sys.exit(130)


def _reason(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__).rstrip(".")


wait_option = click.option(
    "--wait-for-redis",
    "wait_s",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    envvar="BLACKBOARD_WAIT_FOR_REDIS",
    help="Seconds to wait for Redis to answer at start (0: fail at once); then exit 3.",
)
"""The option of every long-running command: how long to wait for Redis at start."""

WAIT_STEP_MAX = 2.0
"""The longest pause between two connection attempts while waiting (backoff doubles)."""


async def wait_for_redis(ctx: Ctx, store: BoardStore, seconds: float) -> None:
    """Wait until Redis answers, ``seconds`` at most: a deployment may start its
    processes before its server. One line says it waits; attempts back off from 0.1 s
    to :data:`WAIT_STEP_MAX`. Once connected, later outages are each process's to
    survive (they do); this is only the start.

    Raises:
        StoreUnavailable: no answer in time, or the server refused the credentials.
    """
    url = ctx.shown_url

    def tell(state: RetryCallState) -> None:
        if state.attempt_number == 1 and state.outcome is not None:
            why = _reason(state.outcome.exception() or Exception())
            click.echo(f"waiting up to {seconds:g} s for Redis at {url}: {why}", err=True)

    retrying = AsyncRetrying(
        retry=retry_if_exception_type(_UNREACHABLE) & retry_if_not_exception_type(_REFUSED),
        stop=stop_after_delay(seconds),
        wait=wait_exponential(multiplier=0.1, max=WAIT_STEP_MAX),
        before_sleep=tell,
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                # A connection attempt to a host that drops packets would hang for minutes.
                async with asyncio.timeout(min(max(seconds, 2.0), 10.0)):
                    await store.redis.ping()
    except _REFUSED as exc:
        raise StoreUnavailable(
            f"Redis at {url} refused the connection: {_reason(exc)}. Fix the user or "
            "password in --redis / BLACKBOARD_REDIS_URL."
        ) from exc
    except _UNREACHABLE as exc:
        waited = f" after {seconds:g} s" if seconds else ""
        longer = "longer " if seconds else ""
        raise StoreUnavailable(
            f"Redis unreachable at {url}{waited}: {_reason(exc)}. Start the server or point "
            f"--redis / BLACKBOARD_REDIS_URL at it (--wait-for-redis SECONDS waits {longer}for "
            "it)."
        ) from exc


def emit(ctx: Ctx, data: Any, as_json: bool, render: Callable[[], None]) -> None:
    """Print ``data`` as JSON (stable shape) or through the rich ``render``."""
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))
    else:
        render()


def _late(param: str) -> Callable[[click.Context, click.Parameter, Any], None]:
    """The callback of a group option given again after the subcommand: it wins."""

    def set_it(click_ctx: click.Context, _: click.Parameter, value: Any) -> None:
        if value:  # not given: the group's value (or environment) stands
            setattr(click_ctx.find_object(Ctx), param, value)

    return set_it


class _Console(Console):
    """Rich's console, but a reader that went away is left to :meth:`_Group.invoke`
    (rich exits with 1)."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        raise BrokenPipeError


class _Group(click.Group):
    """Every subcommand also takes ``--redis`` and ``--debug`` after its name
    (``blackboard show b1 --redis URL``), as people type them."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        cmd.params.append(
            click.Option(
                ["--redis", "late_redis"],
                expose_value=False,
                callback=_late("redis"),
                help="redis:// or unix:// URL (also accepted before the command).",
            )
        )
        cmd.params.append(
            click.Option(
                ["--debug", "late_debug"],
                is_flag=True,
                expose_value=False,
                callback=_late("debug"),
                help="Show tracebacks.",
            )
        )
        super().add_command(cmd, name)

    def invoke(self, ctx: click.Context) -> Any:
        """As click's, but output read by a reader that went away (``blackboard show B
        | head -1``) ends the command quietly with 0: the reader had what it wanted."""
        try:
            return super().invoke(ctx)
        except BrokenPipeError:
            # what is still buffered cannot be written either: drop it, not the exit
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise click.exceptions.Exit(0) from None

    def main(self, *args: Any, **kwargs: Any) -> Any:
        """As click's, but a usage error is one line like every other error (click
        prints the usage block first), with where to read more."""
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "blackboard"
            what = exc.format_message().rstrip(".")
            click.echo(f"error: {what}; see `{where} --help`.", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("error: aborted.", err=True)
            sys.exit(EXIT_FAILED)
        sys.exit(code if isinstance(code, int) else 0)


@click.group(cls=_Group)
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
