"""``blackboard acl``: ACL SETUSER lines on stdout, an ACL file a server starts with,
and a usage error (exit 2) naming every password missing."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from blackboard.cli import main

APP = "aimedapp:app"  # agents first and second
PASSWORDS = {
    "BLACKBOARD_PASSWORD_SUPERVISOR": "s3cret-sup",
    "BLACKBOARD_PASSWORD_OPERATOR": "s3cret-op",
    "BLACKBOARD_PASSWORD_AGENT_FIRST": "s3cret-first",
    "BLACKBOARD_PASSWORD_AGENT_SECOND": "s3cret-second",
}


def run(env: dict[str, str], *args: str) -> Any:
    clean = {name: None for name in PASSWORDS}  # the machine's own, if any, do not count
    return CliRunner().invoke(main, ["acl", "--app", APP, *args], env={**clean, **env})


def test_prints_one_setuser_per_role_with_hashed_passwords() -> None:
    done = run(PASSWORDS)
    assert done.exit_code == 0, done.output
    lines = done.output.splitlines()
    assert [line.split()[2] for line in lines] == [
        "bb-supervisor",
        "bb-operator",
        "bb-agent-first",
        "bb-agent-second",
    ]
    first = hashlib.sha256(b"s3cret-first").hexdigest()
    assert f"#{first}" in lines[2] and "%W~bb:sub:first:*" in lines[2]
    assert all("s3cret" not in line for line in lines)


def test_a_missing_password_is_a_usage_error_naming_it() -> None:
    done = run({k: v for k, v in PASSWORDS.items() if "SECOND" not in k})
    assert done.exit_code == 2
    assert "BLACKBOARD_PASSWORD_AGENT_SECOND" in done.output


@pytest.mark.real_redis
def test_the_acl_file_is_one_a_server_starts_with(tmp_path: Path, redis_servers: Any) -> None:
    path = tmp_path / "users.acl"
    done = run(PASSWORDS, "--file", str(path))
    assert done.exit_code == 0, done.output
    assert path.stat().st_mode & 0o777 == 0o600
    # (default stays on while the fixture checks the server is up, then goes off)
    path.write_text(path.read_text() + "user default on nopass ~* &* +@all\n")
    server = redis_servers("--aclfile", str(path))
    with server.client() as admin:
        admin.acl_setuser("default", enabled=False)
    sock = server.socket
    with redis.Redis(
        unix_socket_path=sock, username="bb-agent-first", password="s3cret-first"
    ) as r:
        assert r.xadd("bb:sub:first:0", {"s": "{}"})
        with pytest.raises(redis.exceptions.NoPermissionError):
            r.hset("bb:{b1}:state", "second", "1")
