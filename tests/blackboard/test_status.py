"""The Lua scripts speak the same status vocabulary as ``blackboard.status``: every
status a script writes or compares is a ``BoardStatus``, and the statuses the commit and
routing scripts treat as stopped are exactly ``STOPPED``."""

from __future__ import annotations

import re
from pathlib import Path

from blackboard.status import STOPPED, BoardStatus

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(
    [
        *ROOT.joinpath("blackboard", "lua").glob("*.lua"),
        *ROOT.joinpath("supervisor", "lua").glob("*.lua"),
    ]
)

WRITTEN = re.compile(r"'HSET',.*?'status',\s*'([a-z_]+)'")
"""``HSET meta … 'status' '<status>'`` (not an HMGET's list of fields)"""
COMPARED = re.compile(r"(?:m\[2\]|current|'status'\))\s*[~=]=\s*'([a-z_]+)'")
"""the status read from meta (``m[2]``, ``current``, an ``HGET … 'status')``) compared"""


def test_every_status_in_the_scripts_is_a_board_status() -> None:
    assert len(SCRIPTS) >= 4, SCRIPTS  # the scripts were found
    used: dict[str, set[str]] = {}
    for script in SCRIPTS:
        text = script.read_text()
        for status in [*WRITTEN.findall(text), *COMPARED.findall(text)]:
            used.setdefault(status, set()).add(script.name)
    unknown = {s: where for s, where in used.items() if s not in set(BoardStatus)}
    assert not unknown, f"statuses outside BoardStatus: {unknown}"
    # and the scan sees them: creation, escalation, the stopped set, a stall, archives
    assert set(used) >= {"active", "escalated", "done", "failed", "awaiting_approval", "archived"}


def test_the_scripts_stopped_set_is_stopped() -> None:
    for name, stopped_by in [
        ("blackboard/lua/commit.lua", "m[2]"),
        ("supervisor/lua/route.lua", "current"),
    ]:
        text = ROOT.joinpath(name).read_text()
        [clause] = re.findall(
            rf"{re.escape(stopped_by)} == '[a-z_]+'(?: or {re.escape(stopped_by)} == '[a-z_]+')+",
            text,
        )
        assert set(re.findall(r"'([a-z_]+)'", clause)) == set(STOPPED), (name, clause)
