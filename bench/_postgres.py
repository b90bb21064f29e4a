"""A private PostgreSQL for the LangGraph comparison: its own data dir, socket, port."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator


def _bin(name: str) -> str:
    found = shutil.which(name) or next(
        iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)), None
    )
    if found is None:
        raise SystemExit(f"bench needs PostgreSQL's {name} (apt-get install postgresql)")
    return found


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """initdb + pg_ctl as the postgres user (initdb refuses root); yields a DSN."""
    workdir = tempfile.mkdtemp(prefix="bb-pg-")
    user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
    if os.geteuid() == 0:
        shutil.chown(workdir, user)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run = ["runuser", "-u", user, "--"] if os.geteuid() == 0 else []
    data = os.path.join(workdir, "data")
    subprocess.run(
        [*run, _bin("initdb"), "-D", data, "-A", "trust", "-U", user],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [
            *run,
            _bin("pg_ctl"),
            "-D",
            data,
            "-l",
            os.path.join(workdir, "log"),
            "-w",
            "-o",
            f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 "
            "-c fsync=on -c synchronous_commit=on",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        deadline = time.monotonic() + 20
        dsn = f"postgresql://{user}@127.0.0.1:{port}/postgres"
        while (
            subprocess.run(
                [*run, _bin("pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True
            ).returncode
            != 0
        ):
            if time.monotonic() > deadline:
                raise SystemExit("PostgreSQL did not start")
            time.sleep(0.1)
        yield dsn
    finally:
        subprocess.run(
            [*run, _bin("pg_ctl"), "-D", data, "-m", "fast", "stop"], capture_output=True
        )
        shutil.rmtree(workdir, ignore_errors=True)
