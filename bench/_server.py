"""A private redis-server for benchmarks: its own temp dir and unix socket."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator

import redis


@contextlib.contextmanager
def redis_server(*extra: str) -> Iterator[str]:
    """Start redis-server, yield its unix:// URL, stop it afterwards."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("bench needs redis-server on PATH (apt-get install redis-server)")
    workdir = tempfile.mkdtemp(prefix="bb-bench-")
    sock = os.path.join(workdir, "redis.sock")
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            "0",
            "--unixsocket",
            sock,
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
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with redis.Redis(unix_socket_path=sock) as c:
                    c.ping()
                break
            except (redis.ConnectionError, FileNotFoundError):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise SystemExit("redis-server did not start") from None
                time.sleep(0.02)
        yield f"unix://{sock}"
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)


def machine() -> str:
    version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True)
    return (
        f"{platform.platform()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"{version.stdout.split()[2].removeprefix('v=')}"
    )


def percentile(samples: list[float], p: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


TARGETS: list[tuple[str, str, str, str]] = []
"""Every TARGET of this run (name, measured, goal, PASS/MISS), for the committed report."""
NOTES: list[tuple[str, str]] = []
"""Figures a section prints outside bench/__main__'s table, for the committed report."""


def target(name: str, measured: float, op: str, goal: float) -> bool:
    ok = measured >= goal if op == ">=" else measured <= goal
    verdict = "PASS" if ok else "MISS"
    print(f"TARGET {name} measured={measured:.3g} goal={op}{goal:g} {verdict}")
    TARGETS.append((name, f"{measured:.3g}", f"{op} {goal:g}", verdict))
    return ok


def note(name: str, value: str) -> None:
    """A figure for the committed report (printed by the caller as it likes)."""
    NOTES.append((name, value))
