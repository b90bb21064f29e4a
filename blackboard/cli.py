"""The ``blackboard`` command line (also ``python -m blackboard``).

Exit codes: 0 ok, 1 the operation failed, 2 usage error, 3 Redis unreachable. Errors are
one clear line; ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import click

from blackboard.app import App, load_app
from blackboard.config import Settings
from blackboard.errors import BlackboardError, ConfigError, StoreUnavailable
from blackboard.store import BoardStore

__all__ = ["main"]

T = TypeVar("T")


class Ctx:
    def __init__(self, redis: str | None, debug: bool) -> None:
        self.redis = redis
        self.debug = debug

    def store(self) -> BoardStore:
        return BoardStore.from_url(settings=Settings.from_env(redis_url=self.redis))


def run_async(ctx: Ctx, fn: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine; map errors to one line and an exit code."""
    try:
        return asyncio.run(fn())  # type: ignore[arg-type]
    except StoreUnavailable as exc:
        if ctx.debug:
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(3)
    except ConfigError as exc:
        if ctx.debug:
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except BlackboardError as exc:
        if ctx.debug:
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)


def stop_on_signals() -> asyncio.Event:
    """SIGTERM/SIGINT set the event: the current work finishes, then the process exits."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


@click.group()
@click.option(
    "--redis",
    "redis_url",
    envvar="BLACKBOARD_REDIS_URL",
    default=None,
    help="redis:// or unix:// URL (default: BLACKBOARD_REDIS_URL, else embedded).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks.")
@click.pass_context
def main(click_ctx: click.Context, redis_url: str | None, debug: bool) -> None:
    """Blackboard: validated, versioned shared state for AI agents, on Redis."""
    logging.basicConfig(
        level=logging.DEBUG if debug else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    click_ctx.obj = Ctx(redis_url, debug)


def _app(ctx: Ctx, spec: str) -> App:
    try:
        return load_app(spec)
    except ConfigError as exc:
        if ctx.debug:
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)


@main.command()
@click.option("--app", "app_spec", required=True, help="pkg.module:app")
@click.option("--name", default=None, help="Consumer name of this replica.")
@click.option("--shards", default=1, show_default=True, help="Submission streams.")
@click.option(
    "--replace-declaration",
    is_flag=True,
    help="Take over from a different app version published in Redis.",
)
@click.pass_obj
def supervisor(
    ctx: Ctx, app_spec: str, name: str | None, shards: int, replace_declaration: bool
) -> None:
    """Run a supervisor replica (any number may run against one Redis)."""
    from blackboard.supervisor import Supervisor

    app = _app(ctx, app_spec)

    async def go() -> None:
        store = ctx.store()
        sup = Supervisor(app, store, name=name, shards=shards)
        await sup.publish(replace=replace_declaration)
        stop = stop_on_signals()
        click.echo(f"supervisor {sup.name} running app {app.name}", err=True)
        await sup.run(stop)
        await store.close()

    run_async(ctx, go)


@main.command()
@click.argument("agent_name")
@click.option("--app", "app_spec", required=True, help="pkg.module:app")
@click.option("--name", default=None, help="Consumer name of this instance.")
@click.option("--shards", default=1, show_default=True, help="The supervisor's --shards.")
@click.pass_obj
def agent(ctx: Ctx, agent_name: str, app_spec: str, name: str | None, shards: int) -> None:
    """Run one instance of an agent (instances of one agent share its queue)."""
    from blackboard.agents import AgentWorker

    app = _app(ctx, app_spec)

    async def go() -> None:
        store = ctx.store()
        worker = AgentWorker(app, agent_name, store, name=name, shards=shards)
        stop = stop_on_signals()
        click.echo(f"agent {worker.name} running", err=True)
        await worker.run(stop)
        await store.close()

    run_async(ctx, go)


def entry() -> Any:
    return main(obj=None)
