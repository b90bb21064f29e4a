"""Fixtures shared by every test package.

``redis_client`` is parametrised over the embedded fakeredis and a real redis-server that
this file starts on a private unix socket (never a shared server's data). Without a
redis-server binary the real half is skipped with a message, except under CI=true,
where it fails; the session also fails under CI if no real-server test passed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Literal

import pytest
import redis
from pydantic import BaseModel, Field

from blackboard import BoardSchema, BoardStore, Key, Settings, connect

IN_CI = os.environ.get("CI", "").lower() == "true"
_real_passed = 0


@dataclass
class RedisServer:
    url: str
    socket: str
    dir: str
    process: subprocess.Popen[bytes]

    def client(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=self.socket, decode_responses=True)


def start_redis_server(*extra: str, port: int = 0) -> RedisServer:
    binary = shutil.which("redis-server")
    if binary is None:
        message = "redis-server is not installed: the real-Redis half of the suite is skipped"
        if IN_CI:
            pytest.fail(message + " (CI=true: .ci/run must install redis-server)")
        pytest.skip(message + "; install it (apt-get install redis-server) to run it.")
    workdir = tempfile.mkdtemp(prefix="bb-redis-")
    sock = os.path.join(workdir, "redis.sock")
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--unixsocket",
            sock,
            "--unixsocketperm",
            "700",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
            "--logfile",
            os.path.join(workdir, "redis.log"),
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = RedisServer(f"unix://{sock}", sock, workdir, process)
    deadline = time.monotonic() + 15
    while True:
        try:
            with server.client() as c:
                c.ping()
            return server
        except (redis.ConnectionError, FileNotFoundError) as exc:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"redis-server did not start; see {workdir}/redis.log") from exc
            time.sleep(0.02)


def stop_redis_server(server: RedisServer) -> None:
    server.process.terminate()
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()
    shutil.rmtree(server.dir, ignore_errors=True)


@pytest.fixture
def redis_servers() -> Iterator[Callable[..., RedisServer]]:
    """Start extra private servers (``start(*args, port=0)``); all stopped afterwards."""
    started: list[RedisServer] = []

    def start(*extra: str, port: int = 0) -> RedisServer:
        started.append(start_redis_server(*extra, port=port))
        return started[-1]

    yield start
    for server in reversed(started):
        stop_redis_server(server)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = start_redis_server()
    yield server
    stop_redis_server(server)


BACKENDS = ["fake", pytest.param("real", marks=pytest.mark.real_redis)]


@pytest.fixture(params=BACKENDS)
async def redis_client(request: pytest.FixtureRequest) -> AsyncIterator[redis.asyncio.Redis]:
    if request.param == "fake":
        client = connect(None)
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        client = connect(server.url)
        await client.flushdb()
    yield client
    await client.aclose()


@pytest.fixture
def settings() -> Settings:
    # A small snapshot floor so that snapshots happen within short tests.
    return Settings(snapshot_min_bytes=256, max_value_bytes=64 << 10)


@pytest.fixture
async def store(redis_client: redis.asyncio.Redis, settings: Settings) -> BoardStore:
    return BoardStore(redis_client, settings)


class Loan(BaseModel):
    """A small loan board used across the tests."""

    loan_amount: Annotated[float | None, Field(gt=0), Key("docs")] = None
    tax_id: Annotated[str | None, Field(pattern=r"^\d{2}-\d{7}$"), Key("docs")] = None
    notes: Annotated[list[str], Key("docs", summarisable=True)] = []
    credit_score: Annotated[int | None, Field(ge=300, le=850), Key("risk")] = None
    risk_rating: Annotated[Literal["low", "medium", "high"] | None, Key("risk")] = None
    details: Annotated[dict[str, int], Key("risk")] = {}
    decision: Annotated[Literal["approve", "reject"] | None, Key("compliance")] = None
    counter: Annotated[int, Key("counter")] = 0


@pytest.fixture
def loan_schema() -> BoardSchema:
    return BoardSchema.from_model(Loan)


@pytest.fixture
async def board(store: BoardStore, loan_schema: BoardSchema) -> str:
    await store.create("loan-1", loan_schema)
    return "loan-1"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "real_redis: runs against a real redis-server")


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    global _real_passed
    if report.when == "call" and report.passed and "real_redis" in report.keywords:
        _real_passed += 1


def pytest_terminal_summary(terminalreporter: object) -> None:
    terminalreporter.write_line(f"real-redis tests passed: {_real_passed}")  # type: ignore[attr-defined]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if IN_CI and _real_passed == 0 and exitstatus in (0, 5):
        session.exitstatus = 1
