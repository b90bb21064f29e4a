"""Inspecting: boards, a board's content, history, diffs, live commits, the trace of
activations, incidents, escalations, dead letters, statistics, agents. Read-only, and
without importing user code: what is needed comes from Redis (the board declarations
and the app declaration the supervisor publishes)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any, cast

import click
from rich.table import Table

from blackboard import codec
from blackboard.cli.base import Ctx, emit, main, run_async
from blackboard.keys import GlobalKeys
from blackboard.store import BoardStore

__all__: list[str] = []


def _when(ms: int | str | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC).strftime("%H:%M:%S")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB"):
        if n < 1024:
            return f"{n}{unit}"
        n //= 1024
    return f"{n}GB"


async def _loads_hash(store: BoardStore, key: str) -> list[dict[str, Any]]:
    raw = cast(dict[str, str], await store.redis.hgetall(key))
    return [codec.loads(v) for v in raw.values()]


@main.command()
@click.option("--status", default=None, help="Only boards with this status.")
@click.option("--archived", is_flag=True, help="List archived boards instead.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def boards(ctx: Ctx, status: str | None, archived: bool, as_json: bool) -> None:
    """Boards: status, version, compliant version, size, last activity."""

    async def go() -> None:
        store = ctx.store()
        infos = [
            b for b in await store.boards(archived=archived) if status is None or b.status == status
        ]
        data = [b.model_dump() for b in infos]

        def render() -> None:
            t = Table("board", "status", "ver", "ok", "size", "tokens", "updated")
            for b in infos:
                t.add_row(
                    b.board_id,
                    b.status,
                    str(b.version),
                    str(b.compliant),
                    _size(b.bytes),
                    str(b.tokens),
                    _when(b.updated_ms),
                )
            ctx.console.print(t)

        emit(ctx, data, as_json, render)

    run_async(ctx, go)


@main.command()
@click.argument("board")
@click.option("--at", "at", type=int, default=None, help="Version to show.")
@click.option("--key", "key", default=None, help="Only this key.")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def show(ctx: Ctx, board: str, at: int | None, key: str | None, as_json: bool) -> None:
    """A board's content, now or at a version."""

    async def go() -> None:
        store = ctx.store()
        info = await store.info(board)
        state = await store.read(board, at=at)
        data: Any = state.data if key is None else {key: state.data.get(key)}
        if key is not None:
            (await store.declaration(board)).check_key(key)

        def render() -> None:
            ctx.console.print(
                f"[bold]{board}[/] {info.schema_name} v{state.version} "
                f"({info.status}, compliant v{info.compliant})"
            )
            for k, v in data.items():
                text = json.dumps(v, ensure_ascii=False, default=str)
                shown = text if len(text) < 300 else text[:297] + "..."
                ctx.console.print(f"  [cyan]{k}[/] = {shown}")

        emit(ctx, {"board": board, "version": state.version, "data": data}, as_json, render)

    run_async(ctx, go)


@main.command()
@click.argument("board")
@click.option("--limit", default=None, type=int)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def history(ctx: Ctx, board: str, limit: int | None, as_json: bool) -> None:
    """A board's commits: version, author, kind, keys, reason."""

    async def go() -> None:
        store = ctx.store()
        entries = await store.history(board, limit=limit)

        def render() -> None:
            t = Table("ver", "time", "kind", "author", "keys", "reason")
            for e in entries:
                t.add_row(
                    str(e.version),
                    _when(e.ts_ms),
                    e.kind,
                    e.author,
                    ", ".join(e.keys),
                    e.reason[:40],
                )
            ctx.console.print(t)

        emit(ctx, [e.model_dump(exclude={"undo"}) for e in entries], as_json, render)

    run_async(ctx, go)


@main.command()
@click.argument("board")
@click.argument("v1", type=int)
@click.argument("v2", type=int)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def diff(ctx: Ctx, board: str, v1: int, v2: int, as_json: bool) -> None:
    """The JSON Patch from version V1 to version V2."""

    async def go() -> None:
        store = ctx.store()
        ops = await store.diff(board, v1, v2)

        def render() -> None:
            for op in ops:
                value = json.dumps(op.get("value"), default=str) if "value" in op else ""
                ctx.console.print(f"{op['op']:<8} {op['path']} {value[:200]}")
            if not ops:
                ctx.console.print("(no difference)")

        emit(ctx, ops, as_json, render)

    run_async(ctx, go)


@main.command()
@click.argument("board")
@click.option("--until-done", is_flag=True, help="Exit when the board is done or stops.")
@click.option("--timeout", default=0.0, help="Exit after this many seconds (0: never).")
@click.pass_obj
def watch(ctx: Ctx, board: str, until_done: bool, timeout: float) -> None:
    """Follow a board live: one line per commit as it lands."""

    async def go() -> None:
        store = ctx.store()
        info = await store.info(board)
        ctx.console.print(f"watching {board} ({info.status}, v{info.version}); Ctrl-C to stop")
        pubsub = store.redis.pubsub()
        await pubsub.subscribe(store.keys(board).events)
        deadline = time.monotonic() + timeout if timeout else None
        try:
            while deadline is None or time.monotonic() < deadline:
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.5)
                if message is not None:
                    event = codec.loads(message["data"], f"an event of board {board!r}")
                    ctx.console.print(
                        f"{_when(int(time.time() * 1000))} v{event['version']:<4} "
                        f"{event['kind']:<9} {event['author']:<20} "
                        f"{', '.join(event['keys'])}"
                    )
                if until_done and (await store.info(board)).status in (
                    "done",
                    "escalated",
                    "failed",
                ):
                    ctx.console.print(f"board {board} is {(await store.info(board)).status}")
                    return
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    run_async(ctx, go)


async def _trace(store: BoardStore, board: str) -> dict[str, Any]:
    acts = sorted(
        await _loads_hash(store, store.keys(board).activations), key=lambda a: a["created_ms"]
    )
    commits = await store.history(board)
    # What the supervisor made of each activation's submission (its id is the activation's).
    decided = {
        k: codec.loads(v)
        for k, v in cast(
            dict[str, str], await store.redis.hgetall(store.keys(board).results)
        ).items()
    }

    def outcome(a: dict[str, Any]) -> str:
        result = decided.get(a["activation_id"])
        if result is None:
            return str(a["outcome"] or a["status"])
        if result.get("audit"):
            return f"audit failed:{result['audit']}"
        reason = f":{result['reason']}" if result["reason"] else ""
        return f"{result['status']}{reason}"

    hops = [
        {
            "agent": a["agent"],
            "reason": a["reason"],
            "status": a["status"],
            "duration_ms": a["duration_ms"],
            "tokens": a["tokens_in"] + a["tokens_out"],
            "cost": a["cost"],
            "retries": a["retries"],
            "outcome": outcome(a),
            "activation": a["activation_id"],
            "parent": a["parent"],
            "created_ms": a["created_ms"],
            "commit": next(
                (e.version for e in commits if e.activation_id == a["activation_id"]), None
            ),
        }
        for a in acts
    ]
    return {
        "board": board,
        "hops": hops,
        "commits": [
            {
                "version": e.version,
                "author": e.author,
                "kind": e.kind,
                "keys": e.keys,
                "ts_ms": e.ts_ms,
            }
            for e in commits
        ],
    }


def _mermaid(trace: dict[str, Any]) -> str:
    by_id = {h["activation"]: h["agent"] for h in trace["hops"]}
    lines = ["flowchart LR"]
    seen = set()
    for h in trace["hops"]:
        source = by_id.get(h["parent"], "start")
        edge = f"    {source} -->|{h['reason']}| {h['agent']}"
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
    """The hop timeline: activations (why, outcome, duration, tokens, retries) and the
    commits they produced."""

    async def go() -> None:
        store = ctx.store()
        await store.info(board)
        data = await _trace(store, board)

        def render() -> None:
            t = Table("time", "agent", "why", "outcome", "ms", "tok", "retry", "commit")
            for h in data["hops"]:
                t.add_row(
                    _when(h["created_ms"]),
                    h["agent"],
                    h["reason"],
                    h["outcome"],
                    str(h["duration_ms"]),
                    str(h["tokens"]),
                    str(h["retries"]),
                    f"v{h['commit']}" if h["commit"] else "-",
                )
            ctx.console.print(t)

        emit(ctx, data, as_json, render)
        if mermaid_file is not None:
            mermaid_file.write(_mermaid(data))

    run_async(ctx, go)


async def _boards_named(store: BoardStore, board: str | None) -> list[str]:
    """The one board asked for (checked, with suggestions if unknown), else all."""
    if board is not None:
        await store.info(board)
        return [board]
    return [b.board_id for b in await store.boards()]


async def _incidents(store: BoardStore, boards: list[str]) -> list[dict[str, Any]]:
    rows = []
    for board in boards:
        entries = cast(
            "list[tuple[str, dict[str, str]]]",
            await store.redis.xrange(store.keys(board).incidents),
        )
        for entry_id, f in entries:
            rows.append({"board": board, "id": entry_id, **f})
    return sorted(rows, key=lambda r: int(r.get("ts", 0)))


@main.command()
@click.argument("board", required=False)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def incidents(ctx: Ctx, board: str | None, as_json: bool) -> None:
    """Loops tripped, budgets spent, timeouts, rollbacks, human input asked."""

    async def go() -> None:
        store = ctx.store()
        names = await _boards_named(store, board)
        rows = await _incidents(store, names)

        def render() -> None:
            t = Table("time", "board", "kind", "detail")
            for r in rows:
                t.add_row(_when(r.get("ts")), r["board"], r["kind"], r["detail"][:70])
            ctx.console.print(t)

        emit(ctx, rows, as_json, render)

    run_async(ctx, go)


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def escalations(ctx: Ctx, as_json: bool) -> None:
    """Boards waiting for a human: escalated, failed, held by a gate, or asking input."""

    async def go() -> None:
        store = ctx.store()
        ids = cast(
            list[str],
            await store.redis.zrange(GlobalKeys(store.settings.key_prefix).escalations, 0, -1),
        )
        rows: list[dict[str, Any]] = []
        for board in ids:
            keys = store.keys(board)
            meta = await store.redis.hmget(keys.meta, ["status", "escalated_reason"])
            held = [
                codec.loads(v)
                for v in cast(dict[str, str], await store.redis.hgetall(keys.held)).values()
            ]
            if meta[0] not in ("escalated", "failed", "awaiting_approval", "paused"):
                continue  # resolved since (an operator resumed, approved or rejected)
            rows.append(
                {
                    "board": board,
                    "status": meta[0],
                    "reason": meta[1] or "",
                    "held": [
                        {
                            "proposal_id": h["proposal_id"],
                            "author": h["author"],
                            "patch": h["patch"],
                        }
                        for h in held
                    ],
                }
            )

        def render() -> None:
            t = Table("board", "status", "why", "held proposals")
            for r in rows:
                t.add_row(
                    r["board"],
                    r["status"],
                    r["reason"][:50],
                    ", ".join(f"{h['proposal_id']} ({h['author']})" for h in r["held"]),
                )
            ctx.console.print(t)

        emit(ctx, rows, as_json, render)

    run_async(ctx, go)


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def dlq(ctx: Ctx, as_json: bool) -> None:
    """Dead letters: entries that exhausted their deliveries, with the reason."""

    async def go() -> None:
        store = ctx.store()
        entries = cast(
            "list[tuple[str, dict[str, str]]]",
            await store.redis.xrange(GlobalKeys(store.settings.key_prefix).dead_letters),
        )
        rows = [{"id": i, **f} for i, f in entries]

        def render() -> None:
            t = Table("id", "from", "deliveries", "reason")
            for r in rows:
                t.add_row(
                    r["id"],
                    r.get("dl_stream", ""),
                    r.get("dl_deliveries", ""),
                    r.get("dl_reason", "")[:60],
                )
            ctx.console.print(t)

        emit(ctx, rows, as_json, render)

    run_async(ctx, go)


async def _stats(store: BoardStore, board: str) -> dict[str, Any]:
    keys = store.keys(board)
    acts = await _loads_hash(store, keys.activations)
    results = await _loads_hash(store, keys.results)
    meta = await store.redis.hmget(keys.meta, ["tokens_used", "cost_used"])
    handoffs = [a for a in acts if a["reason"] == "handoff"]
    rejected: dict[str, int] = {}
    for r in results:
        if r["status"] == "rejected":
            rejected[r["reason"]] = rejected.get(r["reason"], 0) + 1
    commits = await store.history(board)
    recover = []
    for inc in await _incidents(store, [board]):
        later = [e.ts_ms for e in commits if e.ts_ms > int(inc.get("ts", 0))]
        if later:
            recover.append(min(later) - int(inc["ts"]))
    return {
        "board": board,
        "activations": len(acts),
        "handoffs": len(handoffs),
        "handoff_success_rate": (
            sum(1 for a in handoffs if a["status"] == "submitted") / len(handoffs)
        )
        if handoffs
        else None,
        "rejections": rejected,
        "rewrites": sum(1 for a in acts if a["reason"] == "rewrite"),
        "retries": sum(a["retries"] for a in acts),
        "mean_time_to_recover_ms": sum(recover) / len(recover) if recover else None,
        "tokens": int(meta[0] or 0),
        "cost": float(meta[1] or 0),
    }


@main.command()
@click.argument("board", required=False)
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def stats(ctx: Ctx, board: str | None, as_json: bool) -> None:
    """Handoff success, rejections by reason, rewrites, retries, time to recover, tokens
    and cost, per board."""

    async def go() -> None:
        store = ctx.store()
        names = await _boards_named(store, board)
        rows = [await _stats(store, b) for b in names]

        def render() -> None:
            t = Table(
                "board", "acts", "handoff ok", "rejected", "rewr", "retry", "mttr", "tokens", "cost"
            )
            for r in rows:
                rate = r["handoff_success_rate"]
                mttr = r["mean_time_to_recover_ms"]
                t.add_row(
                    r["board"],
                    str(r["activations"]),
                    "-" if rate is None else f"{rate:.0%}",
                    ", ".join(f"{k}:{v}" for k, v in r["rejections"].items()) or "-",
                    str(r["rewrites"]),
                    str(r["retries"]),
                    "-" if mttr is None else f"{mttr / 1000:.1f}s",
                    str(r["tokens"]),
                    f"{r['cost']:.4f}",
                )
            ctx.console.print(t)

        emit(ctx, rows, as_json, render)

    run_async(ctx, go)


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def agents(ctx: Ctx, as_json: bool) -> None:
    """Agents of the deployed app: queue length, pending, instances, tool breakers."""

    async def go() -> None:
        store = ctx.store()
        gk = GlobalKeys(store.settings.key_prefix)
        raw = await store.redis.get(gk.app)
        if raw is None:
            click.echo("no app declaration in Redis: start a supervisor first.", err=True)
            raise SystemExit(1)
        declaration = codec.loads(cast(str, raw))
        rows = []
        for name in declaration["agents"]:
            queue = gk.queue(name)
            length = await store.redis.xlen(queue)
            try:
                pending = (await store.redis.xpending(queue, "workers"))["pending"]
                consumers = await store.redis.xinfo_consumers(queue, "workers")
            except Exception:  # no instance has ever started
                pending, consumers = 0, []
            rows.append(
                {
                    "agent": name,
                    "queued": length,
                    "pending": pending,
                    "instances": [c["name"] for c in consumers],
                }
            )
        breakers = {}
        for tool in declaration.get("tools", []):
            state = cast(dict[str, str], await store.redis.hgetall(gk.breaker(tool)))
            open_until = int(state.get("open_until", 0))
            breakers[tool] = {
                "errors": int(state.get("errors", 0)),
                "open": open_until > time.time() * 1000,
            }
        data = {"app": declaration["name"], "agents": rows, "breakers": breakers}

        def render() -> None:
            t = Table("agent", "queued", "pending", "instances")
            for r in rows:
                t.add_row(
                    r["agent"],
                    str(r["queued"]),
                    str(r["pending"]),
                    ", ".join(r["instances"]) or "-",
                )
            ctx.console.print(t)
            for tool, b in breakers.items():
                ctx.console.print(
                    f"tool {tool}: breaker {'OPEN' if b['open'] else 'closed'} "
                    f"({b['errors']} recent errors)"
                )

        emit(ctx, data, as_json, render)

    run_async(ctx, go)
