"""A board's life: delete it, archive (export) it to a file, import it back, fork it.

``fork`` then tells the supervisor to ``resume`` the new board, so the running app's
agents carry it on (``--rerun AGENT`` activates that agent at once instead)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import click

from blackboard.cli.act import live_supervisors, outcome_json, report, send_command, unanswered
from blackboard.cli.base import EXIT_FAILED, EXIT_USAGE, Ctx, main, run_async
from blackboard.errors import ConfigError
from blackboard.lifecycle import (
    archive_board,
    delete_board,
    export_board,
    fork_board,
    import_board,
    read_export,
    write_export,
)
from blackboard.readmodel import ReadModel
from blackboard.records import BoardInfo
from blackboard.store import BoardStore

__all__: list[str] = []


@main.command()
@click.argument("board")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as one JSON object.")
@click.pass_obj
def delete(ctx: Ctx, board: str, yes: bool, as_json: bool) -> None:
    """Delete a board with its whole history, for good (archive it first to keep it)."""
    info = run_async(ctx, lambda: ctx.store().info(board))
    if not yes:
        question = (
            f"Delete board {board} ({info.status}, version {info.version})? Its content "
            "and whole history are gone for good (`blackboard archive` keeps a file)"
        )
        try:
            confirmed = click.confirm(question, default=False, err=True)
        except click.Abort:
            confirmed = False
        if not confirmed:
            click.echo(f"error: board {board} not deleted (pass --yes not to be asked).", err=True)
            sys.exit(EXIT_FAILED)
    run_async(ctx, lambda: delete_board(ctx.store(), board))
    if as_json:
        _json(board, "delete", "deleted", info.version)
        return
    click.echo(f"deleted {board}: its content and history are gone for good.")


@main.command()
@click.argument("board")
@click.option("--to", "path", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--keep", is_flag=True, help="Only export: keep the board in Redis.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as one JSON object.")
@click.pass_obj
def archive(ctx: Ctx, board: str, path: Path, keep: bool, as_json: bool) -> None:
    """Export a board's full log to a JSON file, then remove it from Redis (`import`
    loads it back)."""
    if path.exists():
        click.echo(f"error: {path} exists; choose another file or remove it.", err=True)
        sys.exit(EXIT_USAGE)

    async def go() -> int:
        store = ctx.store()
        if keep:
            data = await export_board(store, board)
            await asyncio.to_thread(write_export, path, data)
            return len(data["log"])  # its versions after v0: the newest
        version = (await store.info(board)).version
        await archive_board(store, board, path)
        return version

    try:
        versions = run_async(ctx, go)
    except OSError as exc:
        click.echo(f"error: cannot write {path}: {exc.strerror or exc}.", err=True)
        sys.exit(EXIT_FAILED)
    if as_json:
        _json(board, "archive", "archived", versions, path=str(path), kept=keep)
        return
    gone = "kept in Redis" if keep else "removed from Redis"
    click.echo(
        f"archived {board} ({versions} versions) to {path}; {gone}. Load it back with "
        f"`blackboard import {path}`."
    )


@main.command("import")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--board", "board_id", default=None, help="New id (default: the original).")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as one JSON object.")
@click.pass_obj
def import_(ctx: Ctx, path: Path, board_id: str | None, as_json: bool) -> None:
    """Load a board exported by `archive` (every version, its history and records)."""

    async def go() -> BoardInfo:
        data = read_export(path)
        return await import_board(ctx.store(), data, board_id)

    info = run_async(ctx, go)
    if as_json:
        _json(info.board_id, "import", "imported", info.version, board_status=info.status)
        return
    click.echo(f"imported {info.board_id} from {path}: {info.status} at version {info.version}.")


def _json(board: str, command: str, status: str, version: int, **more: Any) -> None:
    """What ``--json`` prints for a lifecycle command (the shape of an act command's:
    :func:`~blackboard.cli.act.outcome_json`)."""
    data = {"board": board, "command": command, "status": status, "version": version, **more}
    click.echo(json.dumps(data, ensure_ascii=False))


async def _check_agents(store: BoardStore, names: tuple[str, ...]) -> None:
    """Refuse re-running agents the deployed app does not have (before forking)."""
    deployed = await ReadModel(store).app() if names else None
    if deployed is None:
        return
    agents = deployed["agents"]
    if unknown := [n for n in names if n not in agents]:
        raise ConfigError(
            f"--rerun {', '.join(unknown)}: not an agent of the deployed app; its agents "
            f"are {', '.join(agents)}."
        )


@main.command()
@click.argument("board")
@click.option("--at", "at", type=int, required=True, help="Version the fork starts from.")
@click.option("--board", "new_board", required=True, help="Id of the new board.")
@click.option("--rerun", multiple=True, help="Activate this agent on the fork at once.")
@click.option("--as", "operator", default=None, help="Operator name (for the resume).")
@click.option("--wait", default=10.0, show_default=True, help="Seconds to wait for the resume.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as one JSON object.")
@click.pass_obj
def fork(
    ctx: Ctx,
    board: str,
    at: int,
    new_board: str,
    rerun: tuple[str, ...],
    operator: str | None,
    wait: float,
    as_json: bool,
) -> None:
    """A new board from BOARD's version V (the original is untouched), carried on by the
    running app's agents: routed as after version V, or --rerun AGENT."""

    async def go() -> tuple[Any, ...]:
        store = ctx.store()
        await _check_agents(store, rerun)
        info = await fork_board(store, board, at, new_board)
        args: dict[str, Any] = {"rerun": list(rerun)} if rerun else {}
        sub, outcome = await send_command(
            ctx, store, new_board, "resume", operator, wait, f"forked from {board}@{at}", **args
        )
        return info, sub, outcome, [] if outcome else await live_supervisors(store)

    info, sub, outcome, live = run_async(ctx, go)
    if not as_json:
        click.echo(f"forked {board}@{at} as {info.board_id} (version {info.version}).")
    if outcome is None:
        click.echo(unanswered("resume", new_board, wait, sub, live), err=True)
        sys.exit(EXIT_FAILED)
    if as_json:
        resumed = outcome_json("resume", new_board, outcome)
        _json(
            new_board, "fork", "forked", info.version, forked_from=f"{board}@{at}", resume=resumed
        )
        sys.exit(0 if outcome.status == "committed" else EXIT_FAILED)
    report("resume", new_board, outcome)
