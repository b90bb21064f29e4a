"""A board's life outside its run: export and import give back the same board at every
version; archive writes the file before removing the board; delete removes it for good;
a fork at the version before a buggy agent's commit, run with the agent fixed, settles
done while the original and its log stay as they were."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import pytest
from blackboard.agents import Context, Handoff, Output, agent
from blackboard.supervisor import Deployment
from pydantic import BaseModel

from blackboard import App, BoardExists, BoardNotFound, BoardStore, ConfigError, Key
from blackboard.errors import SemanticError, ValidationFailed
from blackboard.lifecycle import (
    archive_board,
    delete_board,
    export_board,
    fork_board,
    import_board,
    provenance,
    read_export,
)

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from examples import loan  # noqa: E402


async def everything(store: BoardStore, board: str) -> dict[str, Any]:
    """What a reader sees of a board: content at every version, every diff from v0,
    history (but each entry's time), status, compliant version, activations."""
    info = await store.info(board)
    history = [e.model_dump(exclude={"ts_ms"}) for e in await store.history(board)]
    versions = range(info.version + 1)
    return {
        "status": info.status,
        "compliant": info.compliant,
        "schema": (info.schema_name, info.digest),
        "reads": [(await store.read(board, at=v)).data for v in versions],
        "diffs": [await store.diff(board, 0, v) for v in versions],
        "history": history,
        "activations": await store.redis.hgetall(store.keys(board).activations),
        "results": await store.redis.hgetall(store.keys(board).results),
    }


async def test_export_then_import_gives_back_the_same_board(store: BoardStore) -> None:
    async with Deployment(loan.app, store) as d:
        await loan.run_case(d, "income-slip")  # a write, an audit rollback, the redo
        await d.start("aml", {"application": loan.CASES["aml-hit"]})
        await d.settle("aml")  # held at the gate
    current = await store.version("aml")
    await store.rollback("aml", to=current, author="human:ann", reason="nothing to undo")
    for board in ("loan-income-slip", "aml"):
        before = await everything(store, board)
        data = await export_board(store, board)
        await import_board(store, data, f"{board}-copy")
        assert await everything(store, f"{board}-copy") == before
        assert await everything(store, board) == before  # the original is untouched
    kinds = [e["kind"] for e in (await export_board(store, "loan-income-slip"))["log"]]
    assert "rollback" in kinds
    escalated = {b.board_id for b in await store.boards() if b.status == "awaiting_approval"}
    assert escalated == {"aml", "aml-copy"}
    with pytest.raises(BoardExists):
        await import_board(store, data)  # its own id is taken


async def test_archive_writes_the_file_then_removes_the_board(
    store: BoardStore, tmp_path: Path
) -> None:
    async with Deployment(loan.app, store) as d:
        await loan.run_case(d, "clean")
    before = await everything(store, "loan-clean")
    path = await archive_board(store, "loan-clean", tmp_path / "loan-clean.json")
    assert path == tmp_path / "loan-clean.json" and not list(tmp_path.glob("*.partial"))
    with pytest.raises(BoardNotFound):
        await store.info("loan-clean")
    assert await store.redis.keys("*{loan-clean}*") == []
    await import_board(store, read_export(path))
    assert await everything(store, "loan-clean") == before


async def test_delete_removes_board_history_and_index_entries(store: BoardStore) -> None:
    async with Deployment(loan.app, store) as d:
        await d.start("held", {"application": loan.CASES["aml-hit"]})
        await d.settle("held")
    escalations = "bb:escalations"
    assert await store.redis.zscore(escalations, "held") is not None
    await delete_board(store, "held")
    assert await store.redis.keys("*{held}*") == []
    assert await store.redis.zscore(escalations, "held") is None
    assert [b.board_id for b in await store.boards()] == []
    with pytest.raises(BoardNotFound):
        await delete_board(store, "held")


async def test_import_refuses_what_is_not_an_export(store: BoardStore, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a board export"):
        await import_board(store, {"board": "x"})
    with pytest.raises(ConfigError, match="not a board export"):
        await import_board(store, [1, 2])  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="incomplete or damaged"):
        await import_board(store, {"format": "blackboard.board/1", "board": "x"})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        read_export(bad)
    assert await store.boards() == []


# -- fork: replay a failed case with a fixed agent ---------------------------------------


class Case(BaseModel):
    amount: Annotated[int | None, Key("intake")] = None
    score: Annotated[int | None, Key("scorer")] = None
    decision: Annotated[str | None, Key("decider")] = None


@agent("intake")
async def intake(ctx: Context) -> Output:
    return Output(updates={"amount": 100}, handoff=Handoff(to="scorer"))


@agent("scorer")
async def buggy_scorer(ctx: Context) -> Output:
    return Output(updates={"score": -1}, handoff=Handoff(to="decider"))


@agent("scorer")
async def fixed_scorer(ctx: Context) -> Output:
    return Output(updates={"score": 700}, handoff=Handoff(to="decider"))


@agent("decider", reads=("score",))
async def decider(ctx: Context) -> Output:
    if ctx.board["score"] < 0:
        raise SemanticError(f"score {ctx.board['score']} is impossible")
    return Output(updates={"decision": "approve"})


def case_app(scorer: Any) -> App:
    return App(
        board=Case,
        agents=[intake, scorer, decider],
        start=["intake"],
        done=lambda b: b.get("decision") is not None,
        done_reads=["decision"],
    )


async def test_a_fork_before_the_bad_commit_settles_done_with_the_agent_fixed(
    store: BoardStore,
) -> None:
    async with Deployment(case_app(buggy_scorer), store) as d:
        await d.start("case")
        assert (await d.settle("case")).status == "escalated"
    original = await everything(store, "case")
    bad = next(e for e in await store.history("case") if e.author == "scorer")
    async with Deployment(case_app(fixed_scorer), store) as d:
        forked = await fork_board(store, "case", bad.version - 1, "case-fix")
        assert (forked.status, forked.version) == ("active", bad.version)
        assert await provenance(store, "case-fix") == f"case@{bad.version - 1}"
        outcome = await d.command("case-fix", "resume")
        assert outcome.status == "committed", outcome
        settled = await d.settle("case-fix")
    assert settled.status == "done"
    fixed = (await store.read("case-fix")).data
    assert fixed == {"amount": 100, "score": 700, "decision": "approve"}
    fork_log = await store.history("case-fix")
    assert [(e.kind, e.author) for e in fork_log] == [
        ("write", "intake"),
        ("rollback", "system"),
        ("write", "scorer"),
        ("write", "decider"),
    ]
    assert fork_log[1].reason == f"forked from case@{bad.version - 1}"
    assert await everything(store, "case") == original  # the original is untouched
    assert await provenance(store, "case") is None


async def test_fork_refuses_a_version_the_board_does_not_have(store: BoardStore) -> None:
    async with Deployment(case_app(fixed_scorer), store) as d:
        await d.start("ok")
        await d.settle("ok")
    with pytest.raises(ValidationFailed, match=r"has versions 0\.\.3; cannot fork it at 9"):
        await fork_board(store, "ok", 9, "ok-2")
    with pytest.raises(BoardExists):
        await fork_board(store, "ok", 1, "ok")
    with pytest.raises(BoardNotFound):
        await fork_board(store, "nope", 1, "ok-3")
    assert [b.board_id for b in await store.boards()] == ["ok"]


async def test_a_fork_with_rerun_activates_that_agent_on_it(store: BoardStore) -> None:
    async with Deployment(case_app(buggy_scorer), store) as d:
        await d.start("case")
        await d.settle("case")
    bad = next(e for e in await store.history("case") if e.author == "scorer")
    async with Deployment(case_app(fixed_scorer), store) as d:
        await fork_board(store, "case", bad.version, "case-rerun")  # the bad score kept
        refused = await d.command("case-rerun", "resume", rerun=["scorr"])
        assert refused.status == "rejected"
        assert "cannot re-run scorr: not an agent of the app" in refused.message
        outcome = await d.command("case-rerun", "resume", rerun=["scorer"])
        assert outcome.status == "committed" and "re-run as asked" in outcome.message
        assert (await d.settle("case-rerun")).status == "done"
    authors = [e.author for e in await store.history("case-rerun")]
    assert authors == ["intake", "scorer", "system", "scorer", "decider"]
    assert await store.read_key("case-rerun", "score") == 700


async def test_a_fork_at_a_version_that_failed_its_audit_does_not_count_it_compliant(
    store: BoardStore,
) -> None:
    async with Deployment(loan.app, store) as d:
        await loan.run_case(d, "income-slip")  # v1 fails income_consistency
    assert (await store.info("loan-income-slip")).compliant > 1
    async with Deployment(loan.app, store) as d:
        forked = await fork_board(store, "loan-income-slip", 1, "f1")
        assert forked.compliant == 0  # v1 failed its audit: only v0 is compliant
        outcome = await d.command("f1", "resume", rerun=["risk"])
        assert outcome.status == "committed", outcome
        await d.settle("f1")
    audit = next(e for e in await store.history("f1") if e.author == "supervisor")
    assert audit.kind == "rollback" and "income_consistency" in audit.reason
    back = (await store.read("f1", at=audit.version)).data
    assert back == (await store.read("f1", at=0)).data  # to v0, not to the bad v1
    redo = await store.history("f1", start=audit.version + 1)
    assert redo[0].author == "document_analysis"
    assert (await store.read("f1", at=redo[0].version)).data["verified_income"] == 130_000
