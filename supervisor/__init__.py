"""The supervisor: the only writer of record.

It validates every proposal (ownership, types, policies, gates), commits it atomically,
runs audits and rolls back to the compliant version when one fails, decides who acts
next (handoffs, triggers, router), stops loops and enforces budgets, triggers
summarisation, and executes operators' commands. Installed as ``blackboard.supervisor``
so it never shadows supervisord's top-level ``supervisor`` package.
"""

from blackboard.supervisor.embedded import Deployment
from blackboard.supervisor.process import Supervisor
from blackboard.supervisor.validation import Decision, Validator

__all__ = ["Decision", "Deployment", "Supervisor", "Validator"]
