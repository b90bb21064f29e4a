"""One vocabulary for board statuses: the Lua scripts write and compare only
:class:`~blackboard.status.BoardStatus` values, and the supervisor's Python spells none
of them as a raw string."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from blackboard.status import BoardStatus

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted([*ROOT.glob("supervisor/lua/*.lua"), *ROOT.glob("blackboard/lua/*.lua")])

WRITES = re.compile(r"'HSET',[^)]*?'status',\s*'([^']*)'")
"""A status written: ``HSET meta 'status' 'x'`` (or an HMSET-like field list)."""
COMPARED = re.compile(
    r"(\bcurrent\b|\bstatus\b|\bm\[2\]|'status'\))\s*[=~]=\s*'([^']*)'"
    r"|'([^']*)'\s*[=~]=\s*(\bcurrent\b|\bstatus\b)"
)
"""A status compared: the variables that hold a board's status in the scripts
(``current`` in route.lua, ``m[2]`` in commit.lua), or an HGET of it compared at once."""


def status_literals(text: str) -> list[str]:
    code = re.sub(r"--\[\[.*?\]\]|--[^\n]*", "", text, flags=re.S)  # comments say anything
    found = WRITES.findall(code)
    for match in COMPARED.finditer(code):
        found.append(match.group(2) or match.group(3))
    return found


def test_every_status_literal_in_the_lua_scripts_is_a_board_status() -> None:
    seen: dict[str, list[str]] = {}
    for path in SCRIPTS:
        for literal in status_literals(path.read_text()):
            seen.setdefault(literal, []).append(path.name)
    unknown = {k: v for k, v in seen.items() if k not in set(BoardStatus)}
    assert unknown == {}, f"status literals that are no BoardStatus: {unknown}"
    # the scripts do write and compare statuses: the regexes must keep finding them
    assert {"active", "escalated", "awaiting_approval", "done", "failed", "archived"} <= set(
        seen
    ), seen


@pytest.mark.parametrize(
    "snippet",
    [
        "redis.call('HSET', meta, 'status', 'stoped', 'updated', now)",
        "local stopped = current == 'escalated' or current == 'finished'",
        "if redis.call('HGET', KEYS[1], 'status') ~= 'activ' then",
        "if m[2] == 'archive' then return {'archived'} end",
    ],
)
def test_a_misspelt_status_is_found(snippet: str) -> None:
    assert [s for s in status_literals(snippet) if s not in set(BoardStatus)], snippet


RAW = re.compile(r"""["'](active|paused|awaiting_approval|escalated|done|archived)["']""")


def test_the_supervisor_spells_no_status_as_a_raw_string() -> None:
    # embedded.py is the store's (issue 22's store split moves it onto BoardStatus)
    sources = [p for p in ROOT.glob("supervisor/*.py") if p.name != "embedded.py"]
    raw = {
        f"{p.name}:{n}": line.strip()
        for p in sources
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if RAW.search(line)
    }
    assert raw == {}
