"""``rediss://`` end to end, on a private TLS-only redis-server whose certificate a
self-signed CA (made here with the ``openssl`` CLI) signed: the CA file is given in the
URL (``?ssl_ca_certs=PATH``); without it the certificate is refused."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from aimedapp import app as APP
from blackboard.supervisor import Deployment

from blackboard import BoardStore, StoreUnavailable

pytestmark = [pytest.mark.real_only, pytest.mark.real_redis]


def certificates(where: Path) -> dict[str, Path]:
    """A CA, and a certificate for 127.0.0.1 it signed (one day)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl CLI is not installed: cannot make a test CA")
    files = {n: where / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem")}
    ext = where / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=bb-test-ca",
        "-keyout", str(files["ca.key"]), "-out", str(files["ca.pem"]))  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", str(files["server.key"]), "-out", str(files["server.csr"]))  # fmt: skip
    run("x509", "-req", "-days", "1", "-in", str(files["server.csr"]), "-CA", str(files["ca.pem"]),
        "-CAkey", str(files["ca.key"]), "-CAcreateserial", "-out", str(files["server.pem"]),
        "-extfile", str(ext))  # fmt: skip
    return files


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def tls_url(redis_servers: Any, tmp_path: Path) -> str:
    """A rediss:// URL (without the CA) of a server listening only with TLS on TCP."""
    files = certificates(tmp_path)
    port = free_port()
    redis_servers(
        "--tls-port", str(port),
        "--tls-cert-file", str(files["server.pem"]),
        "--tls-key-file", str(files["server.key"]),
        "--tls-ca-cert-file", str(files["ca.pem"]),
        "--tls-auth-clients", "no",
    )  # fmt: skip
    return f"rediss://127.0.0.1:{port}/0"


async def test_a_deployment_runs_over_tls_with_the_ca_in_the_url(
    tls_url: str, tmp_path: Path
) -> None:
    url = f"{tls_url}?ssl_ca_certs={tmp_path / 'ca.pem'}"
    store = BoardStore.from_url(url)
    try:
        async with Deployment(APP, store) as d:
            await d.start("t1")
            info = await d.settle("t1")
        assert info.status == "done"
        assert (await store.read("t1")).data == {"first": 1, "second": 2}
        assert [e.author for e in await store.history("t1")] == ["first", "second"]
    finally:
        await store.close()
    shown = subprocess.run(
        [sys.executable, "-m", "blackboard", "--redis", url, "show", "t1", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ},
    )
    assert shown.returncode == 0, shown.stderr
    assert '"second": 2' in shown.stdout


async def test_without_the_ca_the_servers_certificate_is_refused(tls_url: str) -> None:
    store = BoardStore.from_url(tls_url)
    try:
        with pytest.raises(StoreUnavailable, match="certificate verify failed"):
            await store.boards()
    finally:
        await store.close()
