"""examples/loan.py end to end: the final boards, the shape of each history, and that
every mechanism it demonstrates actually fired. Both backends."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from bbtest import activations, incidents
from blackboard.supervisor import Deployment

from blackboard import BoardStore

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from examples import loan


def shape(history: list) -> list[tuple[str, str]]:  # type: ignore[type-arg]
    return [(e.kind, e.author) for e in history]


async def test_clean_application_is_approved(store: BoardStore) -> None:
    async with Deployment(loan.app, store) as d:
        info = await loan.run_case(d, "clean")
    assert (info.status, info.version, info.compliant) == ("done", 3, 3)
    state = (await store.read("loan-clean")).data
    assert (state["decision"], state["aml_flag"], state["risk_rating"]) == ("approve", False, "low")
    assert shape(await store.history("loan-clean")) == [
        ("write", "document_analysis"),
        ("write", "risk"),
        ("write", "compliance"),
    ]
    reasons = [(a["agent"], a["reason"]) for a in await activations(store, "loan-clean")]
    assert reasons == [
        ("document_analysis", "start"),
        ("risk", "trigger"),
        ("compliance", "handoff"),
    ]


async def test_invalid_tax_id_goes_to_clarification_not_risk(store: BoardStore) -> None:
    async with Deployment(loan.app, store) as d:
        info = await loan.run_case(d, "bad-tax-id")
    assert info.status == "done"
    history = await store.history("loan-bad-tax-id")
    assert shape(history)[:3] == [
        ("write", "document_analysis"),
        ("write", "clarification"),
        ("write", "document_analysis"),
    ]
    assert history[2].keys == ["tax_id"]
    assert (await store.read("loan-bad-tax-id", at=1)).data["tax_id"] == "12345"
    assert await store.read_key("loan-bad-tax-id", "tax_id") == "98-7654321"
    acts = [(a["agent"], a["reason"]) for a in await activations(store, "loan-bad-tax-id")]
    assert acts[1] == ("clarification", "trigger")
    assert ("risk", "trigger") in acts and acts.index(("risk", "trigger")) > 1


@pytest.mark.parametrize(("answer", "decision"), [("approve", "approve"), ("reject", "reject")])
async def test_aml_hit_waits_for_a_human(store: BoardStore, answer: str, decision: str) -> None:
    async with Deployment(loan.app, store) as d:
        await d.start("loan-aml-hit", {"application": loan.CASES["aml-hit"]})
        held = await d.settle("loan-aml-hit")
        assert held.status == "awaiting_approval"
        assert await store.read_key("loan-aml-hit", "decision") is None
        outcome = await d.command("loan-aml-hit", answer, by="human:officer", note="reviewed")
        assert outcome.status == "committed"
        info = await d.settle("loan-aml-hit")
    assert info.status == "done"
    assert await store.read_key("loan-aml-hit", "decision") == decision
    last = (await store.history("loan-aml-hit"))[-1]
    if answer == "approve":
        assert (last.kind, last.author) == ("approval", "human:officer")
    else:
        assert (last.kind, last.author) == ("write", "compliance")
        rewrite = [a for a in await activations(store, "loan-aml-hit") if a["reason"] == "rewrite"]
        assert rewrite and "reviewed" in rewrite[0]["feedback"]


async def test_inconsistent_income_is_rolled_back_and_redone(store: BoardStore) -> None:
    async with Deployment(loan.app, store) as d:
        info = await loan.run_case(d, "income-slip")
    assert info.status == "done"
    history = await store.history("loan-income-slip")
    assert shape(history)[:3] == [
        ("write", "document_analysis"),
        ("rollback", "supervisor"),
        ("write", "document_analysis"),
    ]
    assert "income_consistency" in history[1].reason
    assert (await store.read("loan-income-slip", at=1)).data["verified_income"] == 13_000_000
    assert (await store.read("loan-income-slip", at=2)).data == (
        await store.read("loan-income-slip", at=0)
    ).data
    assert await store.read_key("loan-income-slip", "verified_income") == 130_000
    assert [i["kind"] for i in await incidents(store, "loan-income-slip")] == ["rollback"]
    redo = [a for a in await activations(store, "loan-income-slip") if a["reason"] == "rewrite"]
    assert redo[0]["agent"] == "document_analysis" and "inconsistent" in redo[0]["feedback"]


def test_example_runs_in_one_command() -> None:
    import subprocess

    done = subprocess.run(
        [sys.executable, "examples/loan.py"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("decision approve") == 4
    for case in loan.CASES:
        assert f"== {case}: done" in done.stdout
    assert "loan-income-slip   v2  rollback  supervisor" in done.stdout  # the live timeline
