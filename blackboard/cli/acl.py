"""``blackboard acl``: the deployment's Redis users, generated from the app."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from blackboard import acl as acls
from blackboard.app import load_app
from blackboard.cli.base import Ctx, main, run_async
from blackboard.config import Settings
from blackboard.errors import ConfigError

__all__ = ["acl"]

FILE = click.Path(dir_okay=False, path_type=Path)


@main.command()
@click.option("--app", "app_spec", required=True, help="pkg.module:app")
@click.option(
    "--secrets",
    "secrets_file",
    type=FILE,
    help="File of NAME=password lines (the environment's BLACKBOARD_PASSWORD_* win).",
)
@click.option(
    "--file",
    "acl_path",
    type=FILE,
    help="Write an ACL file (the server's aclfile) instead of printing ACL SETUSER lines.",
)
@click.option(
    "--apply", "apply_", is_flag=True, help="Create the users on --redis (as an admin user)."
)
@click.pass_obj
def acl(
    ctx: Ctx, app_spec: str, secrets_file: Path | None, acl_path: Path | None, apply_: bool
) -> None:
    """One Redis ACL user per agent, one for the supervisor, one for the operators.

    Passwords come from BLACKBOARD_PASSWORD_SUPERVISOR, BLACKBOARD_PASSWORD_OPERATOR and
    BLACKBOARD_PASSWORD_AGENT_<NAME> (or --secrets); only their SHA-256 is printed or
    written. Each process then connects as its user: --redis
    redis://bb-agent-NAME:PASSWORD@host:6379/0.
    """
    try:
        app = load_app(app_spec)
        prefix = Settings.from_env(redis_url=ctx.redis).key_prefix
        wanted = acls.users(app, prefix)
        secrets = acls.passwords(wanted, secrets_file=secrets_file)
    except ConfigError as exc:
        if ctx.debug:
            raise
        click.echo(f"error: {exc}", err=True)
        sys.exit(2)
    if acl_path is not None:
        acl_path.write_text(acls.acl_file(wanted, secrets))
        acl_path.chmod(0o600)
        click.echo(f"wrote {len(wanted)} users to {acl_path}", err=True)
    elif not apply_:
        for line in acls.setuser_lines(wanted, secrets):
            click.echo(line)
    if apply_:

        async def go() -> None:
            store = ctx.store()
            await acls.apply(store.redis, wanted, secrets)

        run_async(ctx, go)
        click.echo(f"applied {len(wanted)} users on {ctx.shown_url}", err=True)
