"""The supervisor: the only writer of record (validation, routing, loops, rollback).

Installed as ``blackboard.supervisor`` so it never shadows supervisord's top-level
``supervisor`` package. The process arrives with the supervisor issue; today this
package only reserves the namespace.
"""

__all__: list[str] = []
