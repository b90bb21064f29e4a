"""A private redis-server locked down as a deployment would be: the ``default`` user
off (a client without credentials can do nothing), an admin user to set things up."""

from __future__ import annotations

from typing import Any

import redis.asyncio

ADMIN = ("admin", "admin-secret")


def lock_down(server: Any) -> None:
    """Add the admin user, then turn ``default`` off (``server``: conftest's RedisServer)."""
    with server.client() as c:
        c.acl_setuser(
            ADMIN[0],
            enabled=True,
            passwords=[f"+{ADMIN[1]}"],
            keys=["*"],
            channels=["*"],
            commands=["+@all"],
        )
        c.acl_setuser("default", enabled=False)


def admin_client(server: Any) -> redis.asyncio.Redis:
    return redis.asyncio.Redis(
        unix_socket_path=server.socket,
        username=ADMIN[0],
        password=ADMIN[1],
        decode_responses=True,
    )
