"""The board store in one minute: declare a board, commit, conflict, reject, roll back.

Run: python examples/quickstart.py            (embedded store, no server needed)
     BLACKBOARD_REDIS_URL=redis://localhost:6379/0 python examples/quickstart.py
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from pydantic import BaseModel, Field

from blackboard import (
    BoardSchema,
    BoardStore,
    ConflictError,
    Key,
    OwnershipError,
    Proposal,
    ValidationFailed,
)


class LoanBoard(BaseModel):
    """One loan application. Every key has exactly one owner."""

    loan_amount: Annotated[float | None, Field(gt=0), Key("document_analysis")] = None
    verified_income: Annotated[float | None, Field(ge=0), Key("document_analysis")] = None
    credit_score: Annotated[int | None, Field(ge=300, le=850), Key("risk")] = None
    risk_rating: Annotated[Literal["low", "medium", "high"] | None, Key("risk")] = None
    notes: Annotated[list[str], Key("risk", summarisable=True)] = []


async def run() -> None:
    store = BoardStore.from_url()
    board = "loan-42"
    await store.create(board, BoardSchema.from_model(LoanBoard))
    print(f"created board {board} at version 0")

    r = await store.commit(
        board,
        Proposal.updates(
            "document_analysis",
            0,
            {"loan_amount": 250_000.0, "verified_income": 96_000.0},
            reason="extracted from the application",
        ),
    )
    print(f"v{r.version}  document_analysis wrote {', '.join(r.keys)}")

    # Risk computed its score from version 0, before the income was known.
    try:
        await store.commit(
            board, Proposal.updates("risk", 0, {"risk_rating": "high"}, reads=["verified_income"])
        )
    except ConflictError as exc:
        print(f"refused  {type(exc).__name__}: {exc}")

    r = await store.commit(
        board,
        Proposal.updates(
            "risk",
            1,
            {"credit_score": 710, "risk_rating": "low"},
            reads=["verified_income"],
            reason="score 710, income verified",
        ),
    )
    print(f"v{r.version}  risk wrote {', '.join(r.keys)}")

    for bad in (
        Proposal.updates("risk", 2, {"loan_amount": 1.0}),  # not its key
        Proposal.updates("risk", 2, {"credit_score": 9000}),  # out of range
    ):
        try:
            await store.commit(board, bad)
        except (OwnershipError, ValidationFailed) as exc:
            print(f"refused  {type(exc).__name__}: {exc}")

    r = await store.commit(
        board,
        Proposal(
            author="risk",
            base=2,
            patch=[{"op": "add", "path": "/notes/-", "value": "stable employment, 6 years"}],
        ),
    )
    print(f"v{r.version}  risk appended a note")

    r = await store.rollback(board, to=1, author="human:alice", reason="risk score disputed")
    print(f"v{r.version}  rollback to v1 by human:alice (restored {', '.join(r.keys)})")

    print("\nhistory:")
    for e in await store.history(board):
        print(f"  v{e.version}  {e.kind:<8} {e.author:<18} {','.join(e.keys):<28} {e.reason}")
    print("\nboard now:", (await store.read(board)).data)
    print("board at v3:", (await store.read(board, at=3)).data)
    print("diff v1 -> v3:", await store.diff(board, 1, 3))
    size = await store.sizes(board)
    print(f"size: {size.bytes} bytes, ~{size.tokens} tokens")
    await store.close()


if __name__ == "__main__":
    asyncio.run(run())
