"""A separate OS process writing to one board (used by test_concurrency).

usage: python _writer.py URL BOARD MODE N NAME
MODE "counter": read-modify-write of the shared key `counter`, retrying conflicts.
MODE "disjoint": N whole-key writes of `notes` only (this writer's own key), never retried.
Prints one JSON line: {"committed": [versions], "conflicts": n}.
"""

import asyncio
import json
import sys
from typing import Annotated

from pydantic import BaseModel

from blackboard import BoardSchema, BoardStore, ConflictError, Key, Proposal


class Shared(BaseModel):
    counter: Annotated[int, Key("counter")] = 0
    notes_a: Annotated[list[str], Key("a")] = []
    notes_b: Annotated[list[str], Key("b")] = []


async def main(url: str, board: str, mode: str, n: int, name: str) -> None:
    store = BoardStore.from_url(url)
    store.register(BoardSchema.from_model(Shared))
    committed, conflicts = [], 0
    for i in range(n):
        while True:
            if mode == "counter":
                state = await store.read(board)
                proposal = Proposal(
                    author="counter",
                    base=state.version,
                    patch=[
                        {"op": "replace", "path": "/counter", "value": state.data["counter"] + 1}
                    ],
                )
            else:
                version = await store.version(board)
                proposal = Proposal.updates(name, version, {f"notes_{name}": [f"{name}{i}"]})
            try:
                result = await store.commit(board, proposal)
            except ConflictError:
                conflicts += 1
                if mode == "disjoint":
                    raise
                continue
            committed.append(result.version)
            break
    await store.close()
    print(json.dumps({"committed": committed, "conflicts": conflicts}))


if __name__ == "__main__":
    url, board, mode, n, name = sys.argv[1:6]
    asyncio.run(main(url, board, mode, int(n), name))
