"""Seeing why (issue 24): every rejection's reason and a gate's message in `history`,
`trace`, `incidents` and `escalations`, whole in --json and never cut in tables, which
wrap to the terminal's width or COLUMNS, against a real redis-server."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import whyapp
from blackboard.supervisor import Deployment
from click.testing import CliRunner

from blackboard import BoardStore, connect
from blackboard.cli import main
from blackboard.readmodel import ReadModel

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.real_redis]


@pytest.fixture(scope="module")
def why(redis_server: Any) -> dict[str, Any]:
    """Every case of the app run to where it stops, and each rejection's message as
    the supervisor recorded it."""

    async def setup() -> dict[str, Any]:
        store = BoardStore(connect(redis_server.url))
        await store.redis.flushdb()
        async with Deployment(whyapp.app, store) as d:
            for case in whyapp.CASES:
                await d.start(case, {"brief": {"case": case}})
                await d.settle(case)
        reads = ReadModel(store)
        messages = {
            case: [o.message for o in (await reads.outcomes(case)).values() if o.message]
            for case in whyapp.CASES
        }
        await store.close()
        return {"url": redis_server.url, "messages": messages}

    return asyncio.run(setup())


def cli(url: str, *args: str, columns: int | None = None) -> Any:
    env = {"COLUMNS": str(columns)} if columns else {}
    result = CliRunner().invoke(main, ["--redis", url, *args], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def as_json(url: str, *args: str) -> Any:
    return json.loads(cli(url, *args, "--json").output)


def squeeze(text: str) -> str:
    return re.sub(r"\s+", "", text)


def column(output: str, index: int) -> str:
    """The text of one column of a rich table, its wrapped lines joined."""
    cells = [line.split("│")[index + 1] for line in output.splitlines() if line.count("│") > 2]
    return squeeze("".join(cells))


def test_the_reasons_are_in_the_records(why: dict[str, Any]) -> None:
    """What the supervisor recorded is what the operator is shown (the premise)."""
    [policy] = why["messages"]["policy"]
    assert "the draft still says TODO" in policy and "policy 'no_todo'" in policy
    [handoff] = why["messages"]["handoff"]
    assert handoff.startswith("handoff to unknown agent 'reviewr'; agents are ")
    assert "greater than or equal to 0" in why["messages"]["validation"][0]
    assert whyapp.GATE_MESSAGE in why["messages"]["gate"]


def test_history_shows_each_rejection_whole(why: dict[str, Any]) -> None:
    url = why["url"]
    for case in ("validation", "policy", "handoff"):
        rows = as_json(url, "history", case)
        [rejected] = [r for r in rows if r["kind"] == "rejected"]
        assert rejected["reason"] == why["messages"][case][0]
        assert (rejected["author"], rejected["version"]) == ("writer", None)
        # where it happened: before the writer's commit that fixed it
        assert [r["kind"] for r in rows] == ["rejected", "write", "write", "write"]
    assert [r["outcome"] for r in as_json(url, "history", "policy") if r["version"] is None] == [
        "policy"
    ]


def test_trace_shows_why_each_hop_failed(why: dict[str, Any]) -> None:
    url = why["url"]
    hops = as_json(url, "trace", "handoff")["hops"]
    assert [(h["agent"], h["outcome"]) for h in hops][:2] == [
        ("writer", "rejected:handoff"),
        ("writer", "committed"),
    ]
    assert hops[0]["message"] == why["messages"]["handoff"][0]
    gate = as_json(url, "trace", "gate")["hops"]
    assert (gate[-1]["outcome"], gate[-1]["message"]) == ("held:gate:legal", whyapp.GATE_MESSAGE)
    text = cli(url, "trace", "policy", columns=200).output
    assert squeeze(why["messages"]["policy"][0]) in squeeze(text)


def test_incidents_and_escalations_say_why(why: dict[str, Any]) -> None:
    url = why["url"]
    *rejected, incident = as_json(url, "incidents", "stubborn")
    assert incident["kind"] == "rewrites"
    assert incident["rejection"] == why["messages"]["stubborn"][-1]
    assert [r["kind"] for r in rejected] == ["rejected"] * 3
    assert rejected[0]["detail"] == "writer's proposal was rejected (schema)"
    [policy] = as_json(url, "incidents", "policy")
    assert (policy["kind"], policy["rejection"]) == ("rejected", why["messages"]["policy"][0])
    waiting = {e["board"]: e for e in as_json(url, "escalations")}
    assert set(waiting) == {"gate", "stubborn", "fatal"}
    gate = waiting["gate"]
    assert gate["status"] == "awaiting_approval"
    assert gate["held"][0]["message"] == whyapp.GATE_MESSAGE
    assert whyapp.GATE_MESSAGE in gate["why"]
    assert "approve it with `blackboard approve gate`" in gate["action"]
    stubborn = waiting["stubborn"]
    assert stubborn["why"].startswith("rewrites: agent writer was rejected 3 times")
    assert stubborn["rejection"] in stubborn["why"] and "greater than or equal" in stubborn["why"]
    assert whyapp.FATAL in waiting["fatal"]["why"]
    shown = squeeze(cli(url, "escalations", columns=80).output)
    for text in (whyapp.GATE_MESSAGE, stubborn["why"], gate["action"]):
        assert squeeze(text) in shown


@pytest.mark.parametrize("columns", [60, 80, 160])
def test_tables_wrap_to_columns_and_cut_nothing(why: dict[str, Any], columns: int) -> None:
    url = why["url"]
    message = why["messages"]["policy"][0]
    assert whyapp.LONG_WORD in message  # a word wider than any column: folded, not cut
    outputs = {
        args: cli(url, *args, columns=columns).output
        for args in (
            ("history", "policy"),
            ("incidents",),
            ("escalations",),
            ("trace", "policy"),
            ("boards",),
            ("agents",),
            ("stats",),
        )
    }
    for args, out in outputs.items():
        assert max(len(line) for line in out.splitlines()) <= columns, (args, out)
        if args[0] == "trace":  # its agent and outcome are names: ellipsised, never cut
            out = "\n".join(_without_columns(out, 2, 4))  # in pieces (whole below it)
        assert "…" not in out, (args, out)
    assert squeeze(message) in column(outputs[("history", "policy")], 5)
    incident = as_json(url, "incidents", "stubborn")[-1]
    detail = column(outputs[("incidents",)], 3)
    assert squeeze(incident["detail"] + "last rejection:" + incident["rejection"]) in detail
    assert squeeze("why:" + message) in detail
    if columns >= 160:  # room enough: one line per row
        assert len(outputs[("boards",)].splitlines()) == 4 + len(whyapp.CASES)


def _without_columns(table: str, *dropped: int) -> list[str]:
    """The lines of a rendered table, the cells of columns ``dropped`` (1-based) left
    out."""
    kept = []
    for line in table.splitlines():
        bar = line[:1]
        if bar in ("│", "┃"):  # a row, or the header's
            line = bar.join(c for i, c in enumerate(line.split(bar)) if i not in dropped)
        kept.append(line)
    return kept


def test_a_pipe_honours_columns_else_80(why: dict[str, Any]) -> None:
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    env["BLACKBOARD_REDIS_URL"] = why["url"]

    def widest(**extra: str) -> int:
        done = subprocess.run(
            [sys.executable, "-m", "blackboard", "history", "policy"],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return max(len(line) for line in done.stdout.splitlines())

    assert 80 < widest(COLUMNS="150") <= 150
    assert widest() <= 80
