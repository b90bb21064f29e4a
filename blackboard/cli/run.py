"""Running: a supervisor replica, an agent instance, or a whole app in one process."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import signal
import sys
import time
import uuid
from collections.abc import Awaitable
from typing import Any, TypeVar

import click

from blackboard.app import App, load_app
from blackboard.cli.act import live_supervisors
from blackboard.cli.base import EXIT_USAGE, Ctx, main, run_async, wait_for_redis, wait_option
from blackboard.errors import ConfigError
from blackboard.readmodel import ReadModel
from blackboard.status import BoardStatus
from blackboard.store import BoardStore

__all__: list[str] = []

T = TypeVar("T")


def _stop_on_signals(what: str) -> asyncio.Event:
    """SIGTERM/SIGINT set the event: the work in hand finishes, then the process exits.
    One line says what is being finished (``what``); :func:`_stopped` says when it
    stopped."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()

    def stopping(sig: signal.Signals) -> None:
        if not stop.is_set():
            click.echo(f"{sig.name}: stopping; finishing {what}...", err=True)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping, sig)
    return stop


def _stopped(who: str, stop: asyncio.Event) -> None:
    if stop.is_set():
        click.echo(f"{who} stopped at {time.strftime('%H:%M:%S')}.", err=True)


def _load(ctx: Ctx, spec: str) -> App:
    """The app, importable from the current directory as uvicorn and gunicorn do; any
    failure to import it is one line (exit 2), with the traceback under --debug."""
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return load_app(spec)
    except Exception as exc:
        if ctx.debug:
            raise
        click.echo(f"error: {_not_loaded(spec, exc)}", err=True)
        sys.exit(EXIT_USAGE)


def _not_loaded(spec: str, exc: Exception) -> str:
    if isinstance(exc, ConfigError):
        return str(exc)
    if isinstance(exc, SyntaxError):
        return (
            f"--app {spec!r}: syntax error in {exc.filename}, line {exc.lineno}: {exc.msg}. "
            "Fix the module."
        )
    return (
        f"--app {spec!r}: importing it raised {type(exc).__name__}: {exc}. Fix the module "
        "(--debug shows the traceback)."
    )


def _initial(input_file: Any) -> dict[str, Any] | None:
    """The --input file's JSON object, or one line (exit 2) saying what is wrong."""
    if input_file is None:
        return None
    name = getattr(input_file, "name", "--input")
    try:
        data = json.load(input_file)
    except json.JSONDecodeError as exc:
        problem = f"is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno})"
    except UnicodeDecodeError:
        problem = "is not UTF-8 text"
    else:
        if isinstance(data, dict):
            return data
        problem = f"holds a JSON {type(data).__name__}"
    click.echo(
        f"error: --input {name} {problem}; give a JSON object of initial board values, "
        'e.g. {"application": {"amount": 1000}}.',
        err=True,
    )
    sys.exit(EXIT_USAGE)


async def _refuse_other_app(store: BoardStore, app: App) -> None:
    """Refuse to work beside another app deployed in this Redis, as the supervisor does:
    a board started for it, or an agent serving it, would wait for ever."""
    deployed = await ReadModel(store).app()
    if deployed is None:
        return
    mine = app.declaration()
    if deployed.get("digest") != mine["digest"]:
        raise ConfigError(
            f"Redis runs app {deployed.get('name')!r} (declaration {deployed.get('digest')}), "
            f"not this {app.name!r} ({mine['digest']}): no supervisor here would serve it. "
            "Point --redis at that app's Redis, or deploy this app's supervisor first "
            "(--replace-declaration)."
        )


GC_THRESHOLD = 10_000
"""Allocations between two collections of the youngest generation in a supervisor
process (Python's default: 700). A batch of a thousand submissions allocates in bursts;
collected every 700 allocations, with the app's own objects walked again and again, it
cost 3% of the process's instructions (``python -m bench.instructions``), and almost
nothing this way."""


def _tune_gc() -> None:
    """A supervisor process's garbage collector: what it has loaded (the app, its
    modules) is set aside for good, and collections come further apart."""
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])


@main.command()
@click.option("--app", "app_spec", required=True, help="pkg.module:app")
@click.option("--name", default=None, help="Consumer name of this replica.")
@click.option("--shards", default=1, show_default=True, help="Submission streams.")
@click.option(
    "--replace-declaration",
    is_flag=True,
    help="Take over from a different app version published in Redis.",
)
@wait_option
@click.pass_obj
def supervisor(
    ctx: Ctx,
    app_spec: str,
    name: str | None,
    shards: int,
    replace_declaration: bool,
    wait_s: float,
) -> None:
    """Run a supervisor replica (any number may run against one Redis)."""
    from blackboard.supervisor import Supervisor

    app = _load(ctx, app_spec)

    async def go() -> None:
        store = ctx.store()
        await wait_for_redis(ctx, store, wait_s)
        sup = Supervisor(app, store, name=name, shards=shards)
        await sup.publish(replace=replace_declaration)
        stop = _stop_on_signals("the batch in hand and the one read ahead")
        click.echo(f"supervisor {sup.name} running app {app.name}", err=True)
        _tune_gc()
        await sup.run(stop)
        _stopped(f"supervisor {sup.name}", stop)

    run_async(ctx, go)


@main.command()
@click.argument("agent_name")
@click.option("--app", "app_spec", required=True, help="pkg.module:app")
@click.option("--name", default=None, help="Consumer name of this instance.")
@click.option("--shards", default=1, show_default=True, help="The supervisor's --shards.")
@wait_option
@click.pass_obj
def agent(
    ctx: Ctx, agent_name: str, app_spec: str, name: str | None, shards: int, wait_s: float
) -> None:
    """Run one instance of an agent (instances of one agent share its queue)."""
    from blackboard.agents import AgentWorker

    app = _load(ctx, app_spec)

    async def go() -> None:
        store = ctx.store()
        await wait_for_redis(ctx, store, wait_s)
        await _refuse_other_app(store, app)
        worker = AgentWorker(app, agent_name, store, name=name, shards=shards)
        stop = _stop_on_signals("the activation in hand")
        click.echo(f"agent {worker.name} running", err=True)
        await worker.run(stop)
        _stopped(f"agent {worker.name}", stop)

    run_async(ctx, go)


async def _settle_unless(stop: asyncio.Event, settling: Awaitable[T]) -> T | None:
    """``settling``'s result, or None once ``stop`` is set first."""
    task = asyncio.ensure_future(settling)
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if task.done():
        return task.result()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    return None


@main.command("run")
@click.option("--app", "app_spec", required=True, help="pkg.module:app")
@click.option(
    "--input",
    "input_file",
    type=click.File(),
    default=None,
    help="JSON object of initial board values.",
)
@click.option("--board", "board_id", default=None, help="Board id (default: generated).")
@click.option("--timeout", default=60.0, show_default=True, help="Seconds to wait.")
@click.option("--json", "as_json", is_flag=True)
@wait_option
@click.pass_obj
def run_app(
    ctx: Ctx,
    app_spec: str,
    input_file: Any,
    board_id: str | None,
    timeout: float,
    as_json: bool,
    wait_s: float,
) -> None:
    """Run an app's supervisor and all its agents in this process, on one board, until it
    settles (embedded store unless --redis). Exit 0 if the board is done."""
    from blackboard.supervisor import Deployment

    app = _load(ctx, app_spec)
    initial = _initial(input_file)
    board = board_id or f"{app.name.lower()}-{uuid.uuid4().hex[:6]}"

    async def go() -> str:
        store = ctx.store(embedded_ok=True)
        if ctx.redis is not None:
            await wait_for_redis(ctx, store, wait_s)
            await _refuse_other_app(store, app)  # its declaration would replace theirs
        stop = _stop_on_signals(f"the activations in hand on board {board}")
        async with Deployment(app, store) as d:
            await d.start(board, initial)
            with ctx.progress.status(f"running {app.name} on board {board}..."):
                info = await _settle_unless(stop, d.settle(board, timeout=timeout))
        if info is None:
            info = await store.info(board)
            _stopped(f"run (board {board} at version {info.version}, {info.status})", stop)
            return "stopped"
        state = await store.read(board)
        history = await store.history(board)
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "board": board,
                        "status": info.status,
                        "version": info.version,
                        "data": state.data,
                        "commits": [
                            e.model_dump(include={"version", "author", "kind", "keys"})
                            for e in history
                        ],
                    },
                    indent=2,
                    default=str,
                )
            )
        else:
            for e in history:
                click.echo(f"v{e.version:<3} {e.kind:<9} {e.author:<20} {', '.join(e.keys)}")
            click.echo(f"board {board}: {info.status} at version {info.version}")
            click.echo(json.dumps(state.data, indent=2, default=str))
        return info.status

    status = run_async(ctx, go)
    sys.exit(0 if status == BoardStatus.DONE else 1)


@main.command()
@click.option("--app", "app_spec", required=True, help="pkg.module:app")
@click.option("--board", "board_id", required=True, help="Id of the new board.")
@click.option(
    "--input",
    "input_file",
    type=click.File(),
    default=None,
    help="JSON object of initial board values.",
)
@click.pass_obj
def start(ctx: Ctx, app_spec: str, board_id: str, input_file: Any) -> None:
    """Create a board and queue its start agents for the running supervisor and agents."""
    from blackboard.supervisor import Supervisor

    app = _load(ctx, app_spec)
    initial = _initial(input_file)

    async def go() -> None:
        store = ctx.store()
        await _refuse_other_app(store, app)
        info = await Supervisor(app, store).start(board_id, initial)
        click.echo(
            f"started {info.board_id} ({info.schema_name}); follow it with "
            f"`blackboard watch {info.board_id}`"
        )
        if not await live_supervisors(store):
            click.echo(
                f"note: no supervisor is running; board {board_id} waits until one starts "
                f"(`blackboard supervisor --app {app_spec}`).",
                err=True,
            )

    run_async(ctx, go)
