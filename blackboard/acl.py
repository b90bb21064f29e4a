"""Least privilege on Redis: one ACL user per agent, one for the supervisor, one for the
operators, generated from the app (``blackboard acl``).

What each may do (``{p}`` is the key prefix, ``bb`` by default):

- an **agent**'s user reads the boards (``%R~{p}:{*}``: Redis key patterns cannot tell
  one hash field from another, so it can read every key of a board, not only those its
  agent declares), consumes its own queue (``{p}:queue:<agent>``), appends to its own
  submission streams (``{p}:sub:<agent>:*``), beats under its own consumer names
  (``{p}:live:<agent>-*``) and keeps the side-effect tools' state (idempotency results,
  claims, sagas, rate limits, breakers). It cannot write board state, logs, proposal
  records, other agents' queues or streams, or the operators' stream: those answer
  ``NOPERM``.
- the **supervisor**'s user writes everything under the prefix (it is the writer of
  record), without the dangerous commands (``FLUSHALL``, ``KEYS``, ``CONFIG``…).
- the **operator**'s user reads everything under the prefix, subscribes to the boards'
  events and appends to the operators' stream (``{p}:ops:*``); every change it asks for
  goes through the supervisor. It also moves dead letters back (``blackboard retry``).

Passwords come from the environment (``BLACKBOARD_PASSWORD_SUPERVISOR``,
``BLACKBOARD_PASSWORD_OPERATOR``, ``BLACKBOARD_PASSWORD_AGENT_<NAME>``, the agent's name
upper-cased with ``.`` and ``-`` as ``_``) or a secrets file of ``NAME=password`` lines
under the same names (the environment wins). Only their SHA-256 goes into the rules
(``#<hash>``): neither the printed lines, the ACL file nor the board hold a password.
Each process then connects with its user in the URL:
``redis://bb-agent-intake:<password>@host:6379/0``.

The embedded default (an in-process fakeredis) has no users to enforce: there, as with
one shared credential, every process can do what the supervisor can.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from redis.asyncio import Redis

from blackboard.app import App
from blackboard.errors import ConfigError

__all__ = [
    "AclUser",
    "acl_file",
    "apply",
    "password_variable",
    "passwords",
    "setuser_args",
    "setuser_lines",
    "users",
]

Role = Literal["agent", "supervisor", "operator"]

CONNECTION = (
    "+ping",
    "+echo",
    "+hello",
    "+auth",
    "+select",
    "+client|setname",
    "+client|id",
    "+multi",
    "+exec",
    "+discard",
    "+watch",
    "+unwatch",
)
"""What every client does to connect and run a transaction (redis-py's handshake)."""
READ = ("+@read", "-keys", "-scan", "+eval_ro", "+evalsha_ro")
"""Reads of the keys a user may read (listing key names is left out), read-only scripts
included (EVAL declares its keys written as well as read: a reader needs EVAL_RO)."""
SCRIPTS = ("+eval", "+evalsha", "+script|load", "+script|exists")
"""Server-side scripts; each command a script runs is checked against the user's keys."""
AGENT_WRITES = (
    "+xadd",
    "+xack",
    "+xclaim",
    "+xautoclaim",
    "+xreadgroup",
    "+xgroup|create",
    "+xgroup|delconsumer",
    "+set",
    "+del",
    "+hset",
    "+hincrby",
    "+zadd",
    "+zrem",
    "+zremrangebyscore",
    "+pexpire",
    "+rpush",
    "+rpop",
)
"""The write commands an agent's instance sends; its key patterns say where."""
OPERATOR_WRITES = ("+xadd", "+xdel", "+subscribe", "+psubscribe", "+unsubscribe", "+punsubscribe")


@dataclass(frozen=True)
class AclUser:
    """One Redis user of a deployment."""

    name: str
    role: Role
    variable: str
    """The environment variable (or secrets-file name) holding its password."""
    rules: tuple[str, ...]
    """Its ACL rules (keys, channels, commands), without the password."""


def password_variable(role: Role, agent: str = "") -> str:
    """Where a role's password is looked up (see the module's docstring)."""
    suffix = f"AGENT_{re.sub(r'[^A-Za-z0-9]', '_', agent).upper()}" if role == "agent" else role
    return f"BLACKBOARD_PASSWORD_{suffix.upper()}"


def users(app: App, prefix: str = "bb") -> list[AclUser]:
    """The deployment's users: the supervisor, the operator, then one per agent."""
    p = prefix
    made = [
        AclUser(
            f"{p}-supervisor",
            "supervisor",
            password_variable("supervisor"),
            (f"~{p}:*", f"&{p}:*", "+@all", "-@dangerous", "+info"),
        ),
        AclUser(
            f"{p}-operator",
            "operator",
            password_variable("operator"),
            (
                f"%R~{p}:*",
                f"~{p}:ops:*",
                f"~{p}:dlq",
                f"&{p}:*",
                *CONNECTION,
                *READ,
                *OPERATOR_WRITES,
            ),
        ),
    ]
    for agent in app.agent_names:
        made.append(
            AclUser(
                f"{p}-agent-{agent}",
                "agent",
                password_variable("agent", agent),
                (
                    f"%R~{p}:{{*}}:*",  # the boards
                    f"%R~{p}:consumers",  # who beats (to take over the dead's entries)
                    f"%R~{p}:live:*",
                    f"%R~{p}:app",
                    f"~{p}:queue:{agent}",  # its activations
                    f"%W~{p}:sub:{agent}:*",  # its submissions
                    f"~{p}:live:{agent}-*",  # its instances' liveness
                    f"~{p}:consumers",
                    f"%W~{p}:dlq",  # its queue's dead letters
                    f"~{p}:{{*}}:tools",  # side-effect tools: results, claims, sagas
                    f"~{p}:{{*}}:toolclaim:*",
                    f"~{p}:{{*}}:saga",
                    f"~{p}:rate:*",
                    f"~{p}:breaker:*",
                    "resetchannels",
                    *CONNECTION,
                    *READ,
                    *SCRIPTS,
                    *AGENT_WRITES,
                ),
            )
        )
    seen: dict[str, str] = {}
    for user in made:
        if user.variable in seen:
            raise ConfigError(
                f"users {seen[user.variable]!r} and {user.name!r} would share the password "
                f"variable {user.variable}: rename one of the agents."
            )
        seen[user.variable] = user.name
    return made


def passwords(
    wanted: Sequence[AclUser],
    env: Mapping[str, str] | None = None,
    secrets_file: Path | None = None,
) -> dict[str, str]:
    """Each user's password: from ``env`` (default: the environment), else the secrets
    file. Raises :class:`ConfigError` naming every variable missing."""
    env = os.environ if env is None else env
    found: dict[str, str] = {}
    if secrets_file is not None:
        try:
            text = secrets_file.read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read the secrets file {secrets_file}: {exc}") from exc
        for n, line in enumerate(text.splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name, sep, value = line.partition("=")
            if not sep or not value.strip():
                raise ConfigError(
                    f"{secrets_file}:{n}: expected NAME=password (e.g. "
                    "BLACKBOARD_PASSWORD_SUPERVISOR=...)."
                )
            found[name.strip()] = value.strip()
    result: dict[str, str] = {}
    missing = []
    for user in wanted:
        value = env.get(user.variable) or found.get(user.variable, "")
        if value:
            result[user.name] = value
        else:
            missing.append(user.variable)
    if missing:
        raise ConfigError(
            f"no password for {', '.join(missing)}: set them in the environment or in a "
            "secrets file (--secrets FILE, NAME=password lines)."
        )
    return result


def setuser_args(user: AclUser, password: str) -> list[str]:
    """The arguments of ``ACL SETUSER`` for ``user`` (its password as a SHA-256)."""
    digest = hashlib.sha256(password.encode()).hexdigest()
    return [user.name, "reset", "on", f"#{digest}", *user.rules]


def setuser_lines(wanted: Sequence[AclUser], secrets: Mapping[str, str]) -> list[str]:
    """``ACL SETUSER …`` commands, one per user (for redis-cli)."""
    return ["ACL SETUSER " + " ".join(setuser_args(u, secrets[u.name])) for u in wanted]


def acl_file(wanted: Sequence[AclUser], secrets: Mapping[str, str]) -> str:
    """An ACL file (the server's ``aclfile``) defining the users. It does not define
    ``default``: the file replaces every user, so add your own admin and ``default``
    lines (``user default off`` refuses clients that send no credentials)."""
    lines = [
        "user " + " ".join(a for a in setuser_args(u, secrets[u.name]) if a != "reset")
        for u in wanted
    ]
    return "\n".join(lines) + "\n"


async def apply(redis: Redis, wanted: Sequence[AclUser], secrets: Mapping[str, str]) -> None:
    """Create or replace the users on the server ``redis`` is connected to (as a user
    allowed ``ACL SETUSER``)."""
    for user in wanted:
        await redis.execute_command(  # type: ignore[no-untyped-call]
            "ACL", "SETUSER", *setuser_args(user, secrets[user.name])
        )
