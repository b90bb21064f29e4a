"""Inspecting: boards, a board's content, history (with rejections), diffs, a board
followed live, the trace of activations, incidents, escalations, dead letters,
statistics, agents. Read-only, without importing user code, and through the read model
(:mod:`blackboard.readmodel`): no command here talks to Redis itself.

Text is never cut silently: table cells wrap to the terminal's width (``COLUMNS``
when set, 80 when unknown) and ``--json`` always carries every text whole.

About 500 lines: eleven commands, each its options, one read and a renderer; kept
together so that every inspect command is found in one place.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from blackboard.cli.base import Ctx, emit, main, run_async
from blackboard.readmodel import ReadModel
from blackboard.status import BoardStatus
from blackboard.views import Event, Instance, Trace, Waiting

__all__ = ["EXIT_ESCALATED", "EXIT_FAILED_BOARD", "EXIT_STILL_GOING"]

EXIT_ESCALATED = 4
"""``watch --until-done``: the board was escalated (a person must look)."""
EXIT_FAILED_BOARD = 5
"""``watch --until-done``: the board failed (an agent reported a fatal error)."""
EXIT_STILL_GOING = 6
"""``watch --until-done --timeout S``: S seconds passed and the board had not stopped."""
_EXIT_ON = {
    BoardStatus.DONE: 0,
    BoardStatus.ESCALATED: EXIT_ESCALATED,
    BoardStatus.FAILED: EXIT_FAILED_BOARD,
}


def _when(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%H:%M:%S")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1024:
            return f"{n}{unit}"
        n //= 1024
    return f"{n}GB"


def _table(*columns: str, names: tuple[str, ...] = ()) -> Table:
    """A table whose cells wrap (long words fold) rather than being cut; but the
    columns in ``names`` hold identifiers (an agent's name, an outcome), which wrap
    between words only, a word too long for the column ending in "…" (commands that
    use them print the whole value below the table or in --json)."""
    table = Table()
    for name in columns:
        table.add_column(name, overflow="ellipsis" if name in names else "fold")
    return table


def _row(table: Table, *cells: Any) -> None:
    """Cells as plain text: what agents and people wrote is never read as markup."""
    table.add_row(*(Text(str(c)) for c in cells))


def _say(ctx: Ctx, text: str, indent: int = 0) -> None:
    """Plain text wrapped to the console's width (long words folded), every line
    indented by ``indent``."""
    width = max(ctx.console.width - indent, 20)
    for line in Text(text).wrap(ctx.console, width, overflow="fold"):
        line.rstrip()
        ctx.console.print(Text(" " * indent) + line, soft_wrap=True)


def _reads(ctx: Ctx) -> ReadModel:
    return ReadModel(ctx.store())


@main.command()
@click.option("--status", default=None, help="Only boards with this status.")
@click.option("--archived", is_flag=True, help="List archived boards instead.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def boards(ctx: Ctx, status: str | None, archived: bool, as_json: bool) -> None:
    """Boards: status, version, compliant version, size, last activity."""

    async def go() -> None:
        infos = await _reads(ctx).boards(status=status, archived=archived)

        def render() -> None:
            t = _table("board", "status", "ver", "ok", "size", "tokens", "updated")
            for b in infos:
                _row(
                    t,
                    b.board_id,
                    b.status,
                    b.version,
                    b.compliant,
                    _size(b.bytes),
                    b.tokens,
                    _when(b.updated_ms),
                )
            ctx.console.print(t)

        emit(ctx, [b.model_dump() for b in infos], as_json, render)

    run_async(ctx, go)


@main.command()
@click.argument("board")
@click.option("--at", "at", type=int, default=None, help="Version to show.")
@click.option("--key", "key", default=None, help="Only this key.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def show(ctx: Ctx, board: str, at: int | None, key: str | None, as_json: bool) -> None:
    """A board's content, now or at a version (long values ellipsised; --json whole)."""

    async def go() -> None:
        store = ctx.store()
        info = await store.info(board)
        state = await store.read(board, at=at)
        data: Any = state.data if key is None else {key: state.data.get(key)}
        if key is not None:
            (await store.declaration(board)).check_key(key)

        def render() -> None:
            ctx.console.print(
                Text(
                    f"{board} {info.schema_name} v{state.version} "
                    f"({info.status}, compliant v{info.compliant})",
                    style="bold",
                )
            )
            for k, v in data.items():
                text = json.dumps(v, ensure_ascii=False, default=str)
                shown = text if len(text) < 300 else text[:297] + "..."
                _say(ctx, f"  {k} = {shown}")

        emit(ctx, {"board": board, "version": state.version, "data": data}, as_json, render)

    run_async(ctx, go)


@main.command()
@click.argument("board")
@click.option("--limit", default=None, type=int, help="Only the last this many rows.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def history(ctx: Ctx, board: str, limit: int | None, as_json: bool) -> None:
    """A board's commits (version, author, kind, keys, reason) and, where they happened,
    the agents' proposals that were rejected, with the whole reason."""

    async def go() -> None:
        rows = await _reads(ctx).history(board, limit=limit)

        def render() -> None:
            t = _table("ver", "time", "kind", "author", "keys", "reason")
            for r in rows:
                why = r.reason if r.kind != "rejected" else f"{r.outcome}: {r.reason}"
                ver = "-" if r.version is None else r.version
                _row(t, ver, _when(r.ts_ms), r.kind, r.author, ", ".join(r.keys), why)
            ctx.console.print(t)

        emit(ctx, [r.model_dump() for r in rows], as_json, render)

    run_async(ctx, go)


@main.command()
@click.argument("board")
@click.argument("v1", type=int)
@click.argument("v2", type=int)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def diff(ctx: Ctx, board: str, v1: int, v2: int, as_json: bool) -> None:
    """The JSON Patch from version V1 to version V2 (long values ellipsised; --json
    whole)."""

    async def go() -> None:
        ops = await ctx.store().diff(board, v1, v2)

        def render() -> None:
            for op in ops:
                value = json.dumps(op.get("value"), default=str) if "value" in op else ""
                shown = value if len(value) <= 200 else value[:197] + "..."
                _say(ctx, f"{op['op']:<8} {op['path']} {shown}")
            if not ops:
                ctx.console.print("(no difference)")

        emit(ctx, ops, as_json, render)

    run_async(ctx, go)


def _mermaid(trace: Trace) -> str:
    by_id = {h.activation: h.agent for h in trace.hops}
    lines = ["flowchart LR"]
    seen = set()
    for h in trace.hops:
        edge = f"    {by_id.get(h.parent, 'start')} -->|{h.reason}| {h.agent}"
        if edge not in seen:
            seen.add(edge)
            lines.append(edge)
    return "\n".join(lines) + "\n"


@main.command()
@click.argument("board")
@click.option(
    "--mermaid",
    "mermaid_file",
    type=click.File("w"),
    default=None,
    help="Also write the hand-off diagram as Mermaid to this file (- for stdout).",
)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def trace(ctx: Ctx, board: str, mermaid_file: Any, as_json: bool) -> None:
    """The hop timeline: activations (why, outcome, duration, tokens, retries), the
    commits they produced, and why each rejected or held proposal was."""

    async def go() -> None:
        data = await _reads(ctx).trace(board)

        def render() -> None:
            t = _table(
                "time",
                "agent",
                "why",
                "outcome",
                "ms",
                "tok",
                "retry",
                "commit",
                names=("agent", "outcome"),
            )
            for h in data.hops:
                commit = f"v{h.commit}" if h.commit else "-"
                _row(
                    t,
                    _when(h.created_ms),
                    h.agent,
                    h.reason,
                    h.outcome,
                    h.duration_ms,
                    h.tokens,
                    h.retries,
                    commit,
                )
            ctx.console.print(t)
            for h in data.hops:
                if h.message:
                    _say(ctx, f"{_when(h.finished_ms or h.created_ms)} {h.agent} {h.outcome}:")
                    _say(ctx, h.message, indent=2)

        emit(ctx, data.model_dump(), as_json, render)
        if mermaid_file is not None:
            mermaid_file.write(_mermaid(data))

    run_async(ctx, go)


@main.command()
@click.argument("board", required=False)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def incidents(ctx: Ctx, board: str | None, as_json: bool) -> None:
    """Loops tripped, budgets spent, timeouts, rollbacks, human input asked, and each
    rejected proposal, with its reason (for repeated rejections, the last one's)."""

    async def go() -> None:
        reads = _reads(ctx)
        if board is not None:
            await reads.info(board)  # unknown: says so, with suggestions
        rows = await reads.incidents(None if board is None else [board], rejections=True)

        def render() -> None:
            t = _table("time", "board", "kind", "detail")
            for r in rows:
                said = "why" if r.kind == "rejected" else "last rejection"
                detail = r.detail + (f"\n{said}: {r.rejection}" if r.rejection else "")
                _row(t, _when(r.ts_ms), r.board, r.kind, detail)
            ctx.console.print(t)

        emit(ctx, [r.model_dump() for r in rows], as_json, render)

    run_async(ctx, go)


def _waiting(ctx: Ctx, waiting: Waiting, indent: int = 2) -> None:
    if waiting.why:
        _say(ctx, f"why: {waiting.why}", indent)
    if waiting.action:
        _say(ctx, f"do:  {waiting.action}", indent)


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def escalations(ctx: Ctx, as_json: bool) -> None:
    """Boards waiting for a person: escalated, failed, held by a gate (with the gate's
    message), asking input, paused, or waiting on agents no live instance serves; why,
    and what to do."""

    async def go() -> None:
        rows = await _reads(ctx).escalations()

        def render() -> None:
            if not rows:
                ctx.console.print("no board is waiting for a person")
            for r in rows:
                _say(ctx, f"{r.board}  {r.status}  since {_when(r.since_ms)}")
                _waiting(ctx, r)
                for h in r.held:
                    paths = ", ".join(str(op.get("path")) for op in h.patch)
                    _say(ctx, f"held: {h.proposal_id} by {h.author} ({paths})", 2)

        emit(ctx, [r.model_dump() for r in rows], as_json, render)

    run_async(ctx, go)


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def dlq(ctx: Ctx, as_json: bool) -> None:
    """Dead letters: entries that exhausted their deliveries, with the reason."""

    async def go() -> None:
        letters = await _reads(ctx).dead_letters()

        def render() -> None:
            t = _table("id", "from", "deliveries", "reason")
            for d in letters:
                _row(t, d.id, d.stream, d.deliveries, d.reason)
            ctx.console.print(t)

        emit(ctx, [{"id": d.id, **d.fields} for d in letters], as_json, render)

    run_async(ctx, go)


@main.command()
@click.argument("board", required=False)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def stats(ctx: Ctx, board: str | None, as_json: bool) -> None:
    """Handoff success, rejections by reason, rewrites, retries, time to recover, tokens
    and cost, per board."""

    async def go() -> None:
        reads = _reads(ctx)
        names = [board] if board else [b.board_id for b in await reads.boards()]
        rows = [await reads.stats(b) for b in names]

        def render() -> None:
            t = _table(
                "board", "acts", "handoff ok", "rejected", "rewr", "retry", "mttr", "tokens", "cost"
            )
            for r in rows:
                rate, mttr = r.handoff_success_rate, r.mean_time_to_recover_ms
                _row(
                    t,
                    r.board,
                    r.activations,
                    "-" if rate is None else f"{rate:.0%}",
                    ", ".join(f"{k}:{v}" for k, v in r.rejections.items()) or "-",
                    r.rewrites,
                    r.retries,
                    "-" if mttr is None else f"{mttr / 1000:.1f}s",
                    r.tokens,
                    f"{r.cost:.4f}",
                )
            ctx.console.print(t)

        emit(ctx, [r.model_dump() for r in rows], as_json, render)

    run_async(ctx, go)


def _instance(i: Instance) -> str:
    age = "never beat" if i.beat_age_ms is None else f"beat {i.beat_age_ms / 1000:.1f}s ago"
    held = f", {i.in_flight} in flight" if i.in_flight else ""
    return f"{i.name} ({'alive' if i.alive else 'DEAD'}, {age}{held})"


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def agents(ctx: Ctx, as_json: bool) -> None:
    """Agents of the deployed app: live instances (from their heartbeats, with the age
    of the last beat), work in flight and waiting, the boards held up by an agent no
    live instance serves; the supervisors; the tools' breakers."""

    async def go() -> None:
        seen = await _reads(ctx).agents()
        if seen is None:
            click.echo("error: no app declaration in Redis: start a supervisor first.", err=True)
            raise SystemExit(1)

        def render() -> None:
            t = _table("agent", "live", "in flight", "waiting", "instances")
            for a in seen.agents:
                shown = "; ".join(_instance(i) for i in a.instances)
                stopped = f"{a.stopped} stopped" if a.stopped else ""
                _row(
                    t,
                    a.agent,
                    a.live,
                    a.in_flight,
                    a.waiting,
                    "; ".join(s for s in (shown, stopped) if s) or "-",
                )
            ctx.console.print(t)
            for a in seen.agents:
                if a.needed_by:
                    _say(
                        ctx,
                        f"no live instance of {a.agent!r} serves the boards waiting on it "
                        f"({', '.join(a.needed_by)}): start `blackboard agent {a.agent} "
                        "--app APP`",
                    )
            live = [i for i in seen.supervisors if i.alive]
            if live:
                _say(ctx, "supervisors: " + "; ".join(_instance(i) for i in seen.supervisors))
            else:
                _say(
                    ctx,
                    "no live supervisor: nothing is validated, committed or routed; start "
                    "`blackboard supervisor --app APP`",
                )
            for tool, b in seen.breakers.items():
                state = "OPEN" if b.open else "closed"
                _say(ctx, f"tool {tool}: breaker {state} ({b.errors} recent errors)")

        emit(ctx, seen.model_dump(), as_json, render)

    run_async(ctx, go)


def _show(ctx: Ctx, e: Event, board: str) -> None:
    """One watched event, for people."""
    at = _when(e.ts_ms)
    if e.event == "missing":
        _say(ctx, f"waiting for board {board} to be created; Ctrl-C to stop")
    elif e.commit is not None:
        c = e.commit
        _say(ctx, f"{at} v{c.version:<4} {c.kind:<9} {c.author:<20} {', '.join(c.keys)}")
    elif e.activation is not None:
        a = e.activation
        line = f"{at}       {a.agent} {e.phase}"
        if e.phase == "queued":
            line += f" ({a.reason})"
        elif e.phase == "finished":
            line += f" in {a.duration_ms} ms: "
            line += e.outcome.summary() if e.outcome else (a.outcome or a.status)
        _say(ctx, line)
        if e.outcome is not None and e.outcome.message and e.outcome.status != "committed":
            _say(ctx, e.outcome.message, indent=8)
    elif e.event == "status":
        _say(ctx, f"{at} board {board} is {e.status} (v{e.version})")
        if e.waiting is not None:
            _waiting(ctx, e.waiting, indent=8)


@main.command()
@click.argument("board")
@click.option(
    "--until-done",
    is_flag=True,
    help="Exit when the board stops: 0 done, 4 escalated, 5 failed.",
)
@click.option(
    "--timeout",
    default=0.0,
    type=click.FloatRange(min=0),
    help="Exit after this many seconds (0: never); with --until-done, exit 6.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line and event.")
@click.pass_obj
def watch(ctx: Ctx, board: str, until_done: bool, timeout: float, as_json: bool) -> None:
    """Follow a board live: commits, activations queued, started and finished (with why
    a proposal was rejected or held), status changes with what the board waits on and
    what to do. May start before the board exists. Exit codes with --until-done: 0
    done, 4 escalated, 5 failed, 6 --timeout passed first."""

    async def go() -> int:
        reads = _reads(ctx)
        header = first = False
        try:
            async with asyncio.timeout(timeout or None):
                async for event in reads.follow(board):
                    if as_json:
                        click.echo(json.dumps(event.model_dump(mode="json", exclude_none=True)))
                    elif event.event == "status" and not header:
                        header = first = True
                        ctx.console.print(
                            f"watching {board} ({event.status}, v{event.version}); Ctrl-C to stop"
                        )
                        if event.waiting is not None:
                            _waiting(ctx, event.waiting, indent=8)
                    else:
                        header = header or event.event in ("status", "missing")
                        first = False
                        _show(ctx, event, board)
                    sys.stdout.flush()
                    if until_done and event.event == "status" and event.status in _EXIT_ON:
                        if first:  # it was so when the watch began
                            ctx.console.print(f"board {board} is {event.status}")
                        return _EXIT_ON[BoardStatus(event.status)]
        except TimeoutError:
            return EXIT_STILL_GOING if until_done else 0
        return 0

    code = run_async(ctx, go)
    if code:
        sys.exit(code)
