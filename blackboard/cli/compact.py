"""``blackboard compact``: drop a live board's history below a version, keeping what
time travel needs from the newest snapshot at or below it (``BoardStore.compact``)."""

from __future__ import annotations

import json
import sys

import click

from blackboard.cli.base import EXIT_FAILED, Ctx, main, run_async

__all__: list[str] = []


@main.command()
@click.argument("board")
@click.option("--below", type=int, required=True, help="Drop the history below this version.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as one JSON object.")
@click.pass_obj
def compact(ctx: Ctx, board: str, below: int, yes: bool, as_json: bool) -> None:
    """Drop BOARD's log and snapshots below version --below, as far as a snapshot
    allows and never past its compliant version (the audit rollback's target);
    versions from there on still read, diff and roll back as before."""
    info = run_async(ctx, lambda: ctx.store().info(board))
    if not yes and not _confirmed(board, info.version, below):
        click.echo(f"error: board {board} not compacted (pass --yes not to be asked).", err=True)
        sys.exit(EXIT_FAILED)
    since = run_async(ctx, lambda: ctx.store().compact(board, below, keep_compliant=True))
    if as_json:
        data = {
            "board": board,
            "command": "compact",
            "status": "compacted",
            "version": info.version,
            "history_from": since,
        }
        click.echo(json.dumps(data, ensure_ascii=False))
        return
    click.echo(
        f"compacted {board}: its history now starts at version {since} (the newest "
        f"snapshot at or below {below} and its compliant version); versions "
        f"{since}..current can be read."
    )


def _confirmed(board: str, version: int, below: int) -> bool:
    try:
        return click.confirm(
            f"Compact board {board} (version {version}) below version {below}? Versions "
            "before the newest snapshot at or below it can no longer be read, diffed, "
            "rolled back to or exported",
            default=False,
            err=True,
        )
    except click.Abort:  # no answer (end of input)
        return False
