"""Least privilege, tried on a real redis-server (fakeredis stores ACL rules but does not
enforce key permissions): the users ``blackboard acl`` generates, each role (every agent,
the supervisor, the operator, a client with no credentials) trying every command and key
family the system uses, against the expected allow/deny table. Every forbidden one must
be refused (``NOPERM``; without credentials, ``NOAUTH``), every allowed one must work."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any

import pytest
import redis.asyncio
from aclserver import ADMIN, lock_down
from blackboard.agents import Context, Output, agent
from pydantic import BaseModel
from redis import exceptions as redis_errors
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from blackboard import App, BoardStore, Key
from blackboard import acl as acls
from blackboard.errors import ConfigError
from blackboard.records import Proposal

pytestmark = [pytest.mark.real_only, pytest.mark.real_redis]


class Pair(BaseModel):
    first: Annotated[int | None, Key("first")] = None
    second: Annotated[int | None, Key("second")] = None


@agent("first")
async def first(ctx: Context) -> Output:
    return Output(updates={"first": 1})


@agent("second")
async def second(ctx: Context) -> Output:
    return Output(updates={"second": 1})


APP = App(board=Pair, agents=[first, second], start=["first"])
ENV = {u.variable: f"pw-{u.name}" for u in acls.users(APP)}
B = "bb:{b1}"

Op = tuple[str, Callable[[redis.asyncio.Redis], Any]]


def ops(me: str) -> list[tuple[str, frozenset[str], Callable[[redis.asyncio.Redis], Any]]]:
    """(what, the roles allowed, the call): every command on every key family the
    deployment uses, an agent's own and another's seen from agent ``me``. Roles:
    agent, supervisor, operator."""
    other = "second" if me == "first" else "first"
    sup, op, a1 = "supervisor", "operator", "agent"
    everyone = frozenset({sup, op, a1})
    reads = everyone
    rows: list[tuple[str, frozenset[str], Callable[[redis.asyncio.Redis], Any]]] = [
        ("PING", everyone, lambda r: r.ping()),
        # the board: read by all, written by the supervisor alone
        ("HGET board state", reads, lambda r: r.hget(f"{B}:state", "first")),
        ("HGET board meta", reads, lambda r: r.hget(f"{B}:meta", "version")),
        ("XRANGE board log", reads, lambda r: r.xrange(f"{B}:log")),
        ("HGET activation records", reads, lambda r: r.hget(f"{B}:acts", "x")),
        ("HSET board state", {sup}, lambda r: r.hset(f"{B}:state", "first", "666")),
        ("HSET board meta", {sup}, lambda r: r.hset(f"{B}:meta", "status", "done")),
        ("HSET key versions", {sup}, lambda r: r.hset(f"{B}:kver", "first", 9)),
        ("XADD board log", {sup}, lambda r: r.xadd(f"{B}:log", {"v": 1})),
        ("HSET proposal ids", {sup}, lambda r: r.hset(f"{B}:proposals", "p", 1)),
        ("HSET outcomes", {sup}, lambda r: r.hset(f"{B}:results", "p", "{}")),
        ("HSET activation records", {sup}, lambda r: r.hset(f"{B}:acts", "x", "{}")),
        ("ZADD open activations", {sup}, lambda r: r.zadd(f"{B}:open", {"x": 1})),
        ("HSET outbox", {sup}, lambda r: r.hset(f"{B}:outbox", "x", "{}")),
        ("HSET loop counters", {sup}, lambda r: r.hset(f"{B}:loops", "a>b", "1")),
        ("HSET held proposals", {sup}, lambda r: r.hset(f"{B}:held", "p", "{}")),
        ("XADD incidents", {sup}, lambda r: r.xadd(f"{B}:incidents", {"kind": "x"})),
        ("HSET snapshots", {sup}, lambda r: r.hset(f"{B}:snaps", "0", "{}")),
        ("DEL board state", {sup}, lambda r: r.delete(f"{B}:state")),
        ("PUBLISH board events", {sup}, lambda r: r.publish(f"{B}:events", "x")),
        # the side-effect tools' own state: the agents' runtime keeps it
        ("HSET tool results", {sup, a1}, lambda r: r.hset(f"{B}:tools", "k", "1")),
        ("SET tool claim", {sup, a1}, lambda r: r.set(f"{B}:toolclaim:k", "t")),
        ("RPUSH saga", {sup, a1}, lambda r: r.rpush(f"{B}:saga", "c")),
        ("HINCRBY tool breaker", {sup, a1}, lambda r: r.hincrby("bb:breaker:t", "e")),
        # global keys
        ("ZADD board index", {sup}, lambda r: r.zadd("bb:boards", {"b1": 1})),
        ("ZRANGE board index", {sup, op}, lambda r: r.zrange("bb:boards", 0, -1)),
        ("SET app declaration", {sup}, lambda r: r.set("bb:app", "{}")),
        ("GET app declaration", reads, lambda r: r.get("bb:app")),
        ("ZADD escalations", {sup}, lambda r: r.zadd("bb:escalations", {"b1": 1})),
        ("ZADD watch list", {sup}, lambda r: r.zadd("bb:watch", {"b1": 1})),
        ("ZADD consumers", {sup, a1}, lambda r: r.zadd("bb:consumers", {"c": 1})),
        ("SET own liveness", {sup, a1}, lambda r: r.set(f"bb:live:{me}-1", 1)),
        ("SET another's liveness", {sup}, lambda r: r.set("bb:live:sup-1", 1)),
        # submission streams: the author is the stream
        ("XADD own submissions", {sup, a1}, lambda r: r.xadd(f"bb:sub:{me}:0", {"s": "{}"})),
        ("XADD other's submissions", {sup}, lambda r: r.xadd(f"bb:sub:{other}:0", {"s": "{}"})),
        ("XADD operators' stream", {sup, op}, lambda r: r.xadd("bb:ops:0", {"s": "{}"})),
        ("XADD supervisor's stream", {sup}, lambda r: r.xadd("bb:sup:0", {"s": "{}"})),
        ("XRANGE submissions", {sup, op}, lambda r: r.xrange("bb:sub:first:0")),
        # queues: an agent consumes its own
        (
            "XREADGROUP own queue",
            {sup, a1},
            lambda r: r.xreadgroup("workers", f"{me}-1", {f"bb:queue:{me}": ">"}, count=1),
        ),
        ("XACK own queue", {sup, a1}, lambda r: r.xack(f"bb:queue:{me}", "workers", "1-0")),
        (
            "XREADGROUP other's queue",
            {sup},
            lambda r: r.xreadgroup("workers", f"{me}-1", {f"bb:queue:{other}": ">"}, count=1),
        ),
        ("XADD other's queue", {sup}, lambda r: r.xadd(f"bb:queue:{other}", {"a": "x"})),
        ("XADD dead letters", {sup, op, a1}, lambda r: r.xadd("bb:dlq", {"x": 1})),
        ("XDEL dead letters", {sup, op}, lambda r: r.xdel("bb:dlq", "1-0")),
        # scripts run with the caller's rights
        (
            "EVAL writing board state",
            {sup},
            lambda r: r.eval("return redis.call('HSET', KEYS[1], 'f', 1)", 1, f"{B}:state"),
        ),
        (  # EVAL declares its keys read and written: a reader needs EVAL_RO
            "EVAL reading board state",
            {sup},
            lambda r: r.eval("return redis.call('HGET', KEYS[1], 'f')", 1, f"{B}:state"),
        ),
        (
            "EVAL_RO reading board state",
            reads,
            lambda r: r.eval_ro("return redis.call('HGET', KEYS[1], 'f')", 1, f"{B}:state"),
        ),
        # outside the prefix, and the dangerous commands: nobody
        ("SET outside the prefix", set(), lambda r: r.set("other:thing", 1)),
        ("KEYS", set(), lambda r: r.keys("*")),
        ("FLUSHALL", set(), lambda r: r.flushall()),
        ("CONFIG GET", set(), lambda r: r.config_get("dir")),
        ("ACL SETUSER", set(), lambda r: r.acl_setuser("mallory", enabled=True)),
    ]
    return [(what, frozenset(allowed), call) for what, allowed, call in rows]


@pytest.fixture
async def server(redis_servers: Any) -> AsyncIterator[Any]:
    """A private server whose ``default`` user is off, with an admin and the app's users."""
    srv = redis_servers()
    lock_down(srv)
    admin = client(srv, *ADMIN)
    wanted = acls.users(APP)
    await acls.apply(admin, wanted, acls.passwords(wanted, ENV))
    await admin.aclose()
    yield srv


def client(srv: Any, user: str | None = None, password: str | None = None) -> redis.asyncio.Redis:
    return redis.asyncio.Redis(
        unix_socket_path=srv.socket,
        username=user,
        password=password,
        decode_responses=True,
        retry=Retry(NoBackoff(), 0),  # a refusal is an answer: nothing to retry
    )


def role_client(srv: Any, role: str) -> redis.asyncio.Redis:
    if role == "none":
        return client(srv)
    user = next(u for u in acls.users(APP) if u.name.endswith(f"-{role}"))
    return client(srv, user.name, ENV[user.variable])


async def test_every_role_is_allowed_exactly_what_the_table_says(server: Any) -> None:
    admin = client(server, *ADMIN)
    await admin.xgroup_create("bb:queue:first", "workers", id="0", mkstream=True)
    await admin.xgroup_create("bb:queue:second", "workers", id="0", mkstream=True)
    forbidden = denied = 0
    wrong: list[str] = []
    for role in ("first", "second", "supervisor", "operator", "none"):
        r = role_client(server, role)
        kind = "agent" if role in APP.agent_names else role
        for what, allowed, call in ops(role if kind == "agent" else "first"):
            try:
                await call(r)
                ok, why = True, ""
            except redis_errors.NoPermissionError as exc:
                ok, why = False, str(exc)
            except redis_errors.ConnectionError as exc:  # no credentials: refused at HELLO
                if "authenticat" not in str(exc).lower():
                    raise
                ok, why = False, str(exc)
            except redis_errors.ResponseError as exc:  # a script's inner command refused
                if "NOPERM" not in str(exc) and "no permissions" not in str(exc):
                    raise
                ok, why = False, str(exc)
            if kind not in allowed:
                forbidden += 1
                denied += not ok
            if ok != (kind in allowed):
                wrong.append(f"{role}: {what}: {'allowed' if ok else 'denied: ' + why}")
        await r.aclose()
    await admin.aclose()
    assert wrong == [], "\n".join(wrong)
    assert denied == forbidden > 100


async def test_every_role_reads_a_board_at_a_past_version(server: Any) -> None:
    """``show --at`` runs read_at.lua read-only (EVALSHA_RO, EVAL_RO when the server has
    not cached it): the operator's and an agent's users have no write rights for EVALSHA."""
    admin = BoardStore(client(server, *ADMIN))
    await admin.create("b1", APP.schema, {"first": 1})
    patch = [{"op": "replace", "path": "/first", "value": 2}]
    await admin.commit("b1", Proposal(author="first", base=0, patch=patch))
    for role in ("operator", "first", "supervisor"):
        await admin.redis.script_flush()  # not cached: the first call sends it whole
        store = BoardStore(role_client(server, role))
        for _ in range(2):
            assert (await store.read("b1", at=0)).data["first"] == 1
        assert (await store.read("b1")).data["first"] == 2
        await store.close()
    await admin.close()


def test_users_name_their_password_variables_and_hash_the_passwords(tmp_path: Path) -> None:
    wanted = acls.users(APP, "dep")
    assert [u.name for u in wanted] == [
        "dep-supervisor",
        "dep-operator",
        "dep-agent-first",
        "dep-agent-second",
    ]
    assert wanted[2].variable == "BLACKBOARD_PASSWORD_AGENT_FIRST"
    secrets = tmp_path / "secrets"
    secrets.write_text("# deployment\nBLACKBOARD_PASSWORD_OPERATOR = from-file\n")
    env = {u.variable: "from-env" for u in wanted if u.role != "operator"}
    found = acls.passwords(wanted, env, secrets)
    assert found["dep-operator"] == "from-file" and found["dep-supervisor"] == "from-env"
    lines = acls.setuser_lines(wanted, found)
    digest = hashlib.sha256(b"from-file").hexdigest()
    assert f"ACL SETUSER dep-operator reset on #{digest} " in lines[1]
    assert all("from-env" not in line and "from-file" not in line for line in lines)
    with pytest.raises(ConfigError, match="BLACKBOARD_PASSWORD_AGENT_SECOND"):
        acls.passwords(wanted, {}, secrets)
