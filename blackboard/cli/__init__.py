"""The ``blackboard`` command line (also ``python -m blackboard``).

Exit codes: 0 ok, 1 the operation failed (e.g. rejected), 2 usage error, 3 Redis
unreachable. Errors are one line saying what happened and what to do; ``--debug``
shows tracebacks. Every inspection command has ``--json`` with a stable shape.
"""

from __future__ import annotations

from blackboard.cli import (  # noqa: F401  (register them)
    acl,
    act,
    compact,
    demo,
    inspect,
    lifecycle,
    run,
)
from blackboard.cli.base import main

__all__ = ["main"]
