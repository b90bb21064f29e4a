"""Acting as the operator. Every command goes to the supervisor as a submission and
runs on its validated path, logged with the operator's name; the CLI waits for the
recorded outcome."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import re
import sys
import time
from typing import Any

import click

from blackboard.cli.base import EXIT_USAGE, Ctx, main, run_async
from blackboard.dead_letters import retry_dead_letter
from blackboard.keys import GlobalKeys
from blackboard.queues import submit
from blackboard.readmodel import ReadModel
from blackboard.records import Outcome, Submission
from blackboard.store import BoardStore

__all__ = ["live_supervisors", "outcome_json", "report", "send_command", "unanswered"]


def _operator(name: str | None) -> str:
    who = name or os.environ.get("BLACKBOARD_OPERATOR") or getpass.getuser()
    return who if who.startswith("human:") else f"human:{who}"


async def send_command(
    ctx: Ctx,
    store: BoardStore,
    board: str,
    command: str,
    operator: str | None,
    wait: float,
    reason: str = "",
    **args: Any,
) -> tuple[Submission, Outcome | None]:
    """Submit an operator command and wait up to ``wait`` seconds for its recorded
    outcome (looked at once more when the time is up, however short it was)."""
    sub = Submission(
        kind="command",
        board_id=board,
        author=_operator(operator),
        command=command,
        args=args,
        reason=reason,
    )
    await submit(store.redis, store.settings.key_prefix, sub)
    deadline = time.monotonic() + wait
    reads = ReadModel(store)
    with ctx.progress.status(f"{command} {board}: waiting for the supervisor..."):
        while True:
            outcome = await reads.outcome(board, sub.proposal_id)
            if outcome is not None:
                return sub, outcome
            if time.monotonic() >= deadline:
                return sub, None
            await asyncio.sleep(min(0.05, max(deadline - time.monotonic(), 0)))


async def live_supervisors(store: BoardStore) -> list[str]:
    """Supervisor replicas beating now."""
    return [i.name for i in await ReadModel(store).supervisors() if i.alive]


def unanswered(command: str, board: str, wait: float, sub: Submission, live: list[str]) -> str:
    """What happened to a command no supervisor answered in time, and what to do."""
    if live:
        return (
            f"error: no answer within {wait:g} s; the {command} command is queued "
            f"(proposal {sub.proposal_id}) and supervisor {live[0]} is running: it will "
            f"run it. See what it did with `blackboard history {board}`, or pass a longer "
            "--wait."
        )
    return (
        f"error: no supervisor answered within {wait:g} s and none is running; the "
        f"{command} command stays queued (proposal {sub.proposal_id}) and runs when a "
        "supervisor starts (`blackboard supervisor --app ...`)."
    )


def report(command: str, board: str, outcome: Outcome, as_json: bool = False) -> None:
    """One line for the outcome; with ``as_json``, one JSON object instead
    (:func:`outcome_json`), and the line on stderr too if it failed. Exit 0 if
    committed, else 1."""
    failed = outcome.status != "committed"
    if as_json:
        click.echo(json.dumps(outcome_json(command, board, outcome), ensure_ascii=False))
    line = f"{'error: ' if failed else ''}{command} {board}: {outcome.status}"
    if outcome.version is not None:
        line += f" (version {outcome.version})"
    if outcome.message:
        line += f" - {outcome.message}"
    if failed or not as_json:
        click.echo(line, err=failed)
    sys.exit(1 if failed else 0)


def outcome_json(command: str, board: str, outcome: Outcome) -> dict[str, Any]:
    """What ``--json`` prints for a command: the board, the command, and its outcome
    (status, version, keys, reason, message)."""
    return {"board": board, "command": command, **outcome.model_dump(exclude={"audit"})}


def _command(
    ctx: Ctx,
    board: str,
    command: str,
    operator: str | None,
    wait: float,
    reason: str = "",
    as_json: bool = False,
    **args: Any,
) -> None:
    async def go() -> tuple[Submission, Outcome | None, list[str]]:
        store = ctx.store()
        await store.info(board)  # unknown boards fail here, with suggestions
        sub, outcome = await send_command(
            ctx, store, board, command, operator, wait, reason, **args
        )
        return sub, outcome, [] if outcome else await live_supervisors(store)

    sub, outcome, live = run_async(ctx, go)
    if outcome is None:
        click.echo(unanswered(command, board, wait, sub, live), err=True)
        sys.exit(1)
    report(command, board, outcome, as_json)


def _common(fn: Any) -> Any:
    fn = click.option(
        "--as",
        "operator",
        default=None,
        help="Operator name (default: BLACKBOARD_OPERATOR or your user).",
    )(fn)
    fn = click.option(
        "--wait",
        default=10.0,
        show_default=True,
        help="Seconds to wait for the supervisor's answer.",
    )(fn)
    fn = click.option(
        "--json", "as_json", is_flag=True, help="Print the outcome as one JSON object."
    )(fn)
    return fn


@main.command()
@click.argument("board")
@click.option("--proposal", "proposal_id", default="", help="Held proposal (if several).")
@click.option("--note", default="")
@_common
@click.pass_obj
def approve(ctx: Ctx, /, board: str, proposal_id: str, note: str, **common: Any) -> None:
    """Commit a proposal a gate is holding."""
    _command(ctx, board, "approve", proposal_id=proposal_id, note=note, **common)


@main.command()
@click.argument("board")
@click.option("--proposal", "proposal_id", default="", help="Held proposal (if several).")
@click.option("--note", required=True, help="Why: returned to the agent as feedback.")
@_common
@click.pass_obj
def reject(ctx: Ctx, /, board: str, proposal_id: str, note: str, **common: Any) -> None:
    """Return a held proposal to its agent with the reason."""
    _command(ctx, board, "reject", proposal_id=proposal_id, note=note, **common)


@main.command()
@click.argument("board")
@click.option("--to", "to", type=int, default=None, help="Version to restore.")
@click.option("--compliant", is_flag=True, help="Restore the compliant version.")
@click.option("--before-agent", default=None, help="Restore before this agent's last commit.")
@click.option("--reason", default="")
@_common
@click.pass_obj
def rollback(
    ctx: Ctx,
    board: str,
    to: int | None,
    compliant: bool,
    before_agent: str | None,
    reason: str,
    operator: str | None,
    wait: float,
    as_json: bool,
) -> None:
    """Restore an earlier version as a new commit (history is kept)."""
    chosen = sum([to is not None, compliant, before_agent is not None])
    if chosen != 1:
        click.echo("error: give exactly one of --to V, --compliant, --before-agent NAME.", err=True)
        sys.exit(2)
    args: dict[str, Any] = (
        {"to": to}
        if to is not None
        else ({"compliant": True} if compliant else {"before_agent": before_agent})
    )
    _command(ctx, board, "rollback", operator, wait, reason=reason, as_json=as_json, **args)


@main.command()
@click.argument("board")
@click.option("--reason", required=True)
@_common
@click.pass_obj
def flag(
    ctx: Ctx, board: str, reason: str, operator: str | None, wait: float, as_json: bool
) -> None:
    """Flag the current version: back to the compliant one, the culprit redoes its work."""
    _command(ctx, board, "flag", operator, wait, reason=reason, as_json=as_json)


@main.command()
@click.argument("board")
@_common
@click.pass_obj
def pause(ctx: Ctx, board: str, operator: str | None, wait: float, as_json: bool) -> None:
    """Stop dispatching activations for a board."""
    _command(ctx, board, "pause", operator, wait, as_json=as_json)


@main.command()
@click.argument("board")
@_common
@click.pass_obj
def resume(ctx: Ctx, board: str, operator: str | None, wait: float, as_json: bool) -> None:
    """Resume a paused or escalated board (loop counters reset)."""
    _command(ctx, board, "resume", operator, wait, as_json=as_json)


@main.command("set")
@click.argument("board")
@click.argument("assignments", nargs=-1, required=True)
@click.option("--reason", default="")
@_common
@click.pass_obj
def set_keys(
    ctx: Ctx,
    board: str,
    assignments: tuple[str, ...],
    reason: str,
    operator: str | None,
    wait: float,
    as_json: bool,
) -> None:
    """Write keys owned by 'human': KEY=JSON ... (e.g. verdict='"yes"' max_amount=5000)."""
    values: dict[str, Any] = {}
    for item in assignments:
        key, sep, raw = item.partition("=")
        if not sep:
            click.echo(f"error: {item!r} is not KEY=JSON.", err=True)
            sys.exit(2)
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError as exc:
            click.echo(
                f"error: the value of {key} is not valid JSON ({exc.msg} at column "
                f"{exc.colno}): {raw}. A string is quoted in JSON, e.g. "
                f"""{key}='"some text"'.""",
                err=True,
            )
            sys.exit(2)
    _command(ctx, board, "set", operator, wait, reason=reason, as_json=as_json, values=values)


@main.command()
@click.argument("entry_id")
@click.pass_obj
def retry(ctx: Ctx, entry_id: str) -> None:
    """Put a dead letter back on the stream it came from (and remove it from the DLQ)."""

    async def go() -> str | None:
        store = ctx.store()
        if re.fullmatch(r"\d+-\d+", entry_id) is None:  # not an id as `dlq` lists them
            return None
        dead_letters = GlobalKeys(store.settings.key_prefix).dead_letters
        return await retry_dead_letter(store.redis, dead_letters, entry_id)

    new_id = run_async(ctx, go)
    if new_id is None:
        missing = f"no dead letter {entry_id!r}; list them with `blackboard dlq`."
        click.echo(f"error: {missing}", err=True)
        sys.exit(EXIT_USAGE)
    click.echo(f"retried {entry_id} as {new_id}")
