"""``connguard token create|list|revoke``: over the API, or with ``--db URL`` directly in the
database (bootstrap, like ``keystone-manage bootstrap``)."""

from __future__ import annotations

import os
import re
import sys
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import click

from connguard.cli.client import Client, connection, emit_list, lister, page_in_memory
from connguard.db.roles import ROLES

COLUMNS = ["id", "project_id", "role", "host", "description", "created_at", "expires_at", "last_used_at"]
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^(\d+)([smhdw])$")


def _duration(ctx: click.Context, param: click.Parameter, value: str | None) -> timedelta | None:
    if value is None:
        return None
    m = _DURATION.match(value.strip())
    if not m or int(m.group(1)) == 0:
        raise click.BadParameter(f"{value!r} is not a duration such as 30d, 12h, 90m, 3600s or 2w")
    return timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])


def _instant(ctx: click.Context, param: click.Parameter, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an ISO 8601 time such as 2027-01-01T00:00:00Z") from None
    return when.replace(tzinfo=timezone.utc) if when.tzinfo is None else when


def _with_db(db_url: str, work: Callable[[Any], Any]) -> Any:
    from connguard.db.errors import ServiceError
    from connguard.db.session import SchemaTooNew, make_engine, migrate, session_factory

    from connguard.cli.daemon_config import check_db_url, create_private, sqlite_path

    try:
        check_db_url(db_url)  # not a new database next to wherever this command was run
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--db'") from None
    if sqlite_path(db_url) is not None:
        create_private(sqlite_path(db_url))
    engine = make_engine(db_url)
    try:
        migrate(engine)
        with session_factory(engine)() as session:
            out = work(session)
            session.commit()
            return out
    except (ServiceError, SchemaTooNew) as exc:
        click.echo(f"Error: {getattr(exc, 'message', exc)}", err=True)
        sys.exit(1)
    finally:
        engine.dispose()


@click.group("token")
def token() -> None:
    """API tokens (roles: admin, member, reader, agent)."""


db_option = click.option("--db", "db_url", metavar="URL", help="Write to this database directly (bootstrap).")


@token.command("create")
@click.option("--project", required=True, help="The project the token acts for.")
@click.option("--role", required=True, type=click.Choice(ROLES),
              help="admin: everything; member: its project's resources; reader: read only; agent: one host's channel.")
@click.option("--host", help="The host an agent token serves.")
@click.option("--description", default="", help="Free text (whose token, what for).")
@click.option("--output", "output_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Write the token to FILE (created with mode 0600; an existing file is refused) instead of "
                   "stdout, e.g. the agent's token_file.")
@click.option("--expires-in", "expires_in", metavar="DURATION", callback=_duration,
              help="Expire after this long: 30d, 12h, 90m, 3600s, 2w (default: never).")
@click.option("--expires-at", "expires_at", metavar="TIME", callback=_instant,
              help="Expire at this ISO 8601 time (UTC unless it names a zone), e.g. 2027-01-01T00:00:00Z.")
@db_option
@connection
def create(client: Client, project: str, role: str, host: str | None, description: str,
           expires_in: timedelta | None, expires_at: datetime | None, db_url: str | None,
           output_file: str | None) -> None:
    """Print a new token (alone on stdout). An expired token is refused (401 TokenExpired)."""
    if output_file and os.path.lexists(output_file):
        raise click.BadParameter(f"{output_file} exists: not overwritten", param_hint="'--output'")
    if expires_in is not None and expires_at is not None:
        raise click.UsageError("give --expires-in or --expires-at, not both")
    if expires_in is not None:
        expires_at = datetime.now(timezone.utc) + expires_in
    if db_url:
        from connguard.db.services.tokens import create_token

        secret = _with_db(db_url, lambda s: create_token(s, project_id=project, role=role, host=host,
                                                         description=description, expires_at=expires_at)[0])
    else:
        body = {"project_id": project, "role": role, "description": description, **({"host": host} if host else {}),
                **({"expires_at": expires_at.isoformat()} if expires_at is not None else {})}
        secret = client.post("connguard/tokens", {"token": body})["token"]["token"]
    if output_file:
        fd = os.open(output_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        os.fchmod(fd, 0o600)  # whatever the umask
        with os.fdopen(fd, "w") as fh:
            fh.write(secret + "\n")
        click.echo(f"token written to {output_file} (mode 0600)", err=True)
        return
    click.echo(secret)


@token.command("list")
@db_option
@connection
@lister
def list_(client: Client, db_url: str | None, fmt: str, columns: tuple[str, ...], page: dict[str, Any]) -> None:
    """List tokens (never their secrets). last_used_at is written at most once a minute per token."""
    if db_url:
        from connguard.db.services.tokens import list_tokens

        rows = page_in_memory(_with_db(db_url, lambda s: list_tokens(s)), page)
    else:
        rows = client.get("connguard/tokens", **page)["tokens"]
    emit_list(rows, default=COLUMNS, fmt=fmt, columns=columns)


@token.command("revoke")
@click.argument("token_ids", nargs=-1, required=True)
@db_option
@connection
def revoke(client: Client, token_ids: tuple[str, ...], db_url: str | None) -> None:
    """Revoke the tokens TOKEN_IDS (ids as token list shows them)."""
    for token_id in token_ids:
        if db_url:
            from connguard.db.services.tokens import revoke_token

            _with_db(db_url, lambda s, t=token_id: revoke_token(s, token_id=t))
        else:
            client.delete(f"connguard/tokens/{token_id}")
