"""``connguard db upgrade|check|current``: the server database's schema, as ``neutron-db-manage``
manages Neutron's. ``upgrade`` takes the migration lock (connguard.db.schema), so it may run
while servers start or serve; ``check`` is for scripts and health checks (exit codes below)."""

from __future__ import annotations

import sys
from typing import Any, Callable

import click

# db check's exit codes (click keeps 2 for usage errors)
EXIT_ERROR = 1  # the database cannot be opened
EXIT_BEHIND = 3  # empty or older: connguard db upgrade
EXIT_NEWER = 4  # migrated by a newer connguard, or not connguard's

db_option = click.option("--db", "db_url", metavar="URL",
                         help="SQLAlchemy URL (default: SQLite under $CONNGUARD_DATA_DIR or /var/lib/connguard, "
                              "as connguard server).")


def _shown(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - not a URL: make_engine says why
        return url
    return url if parsed.password is None else parsed.render_as_string(hide_password=True)


def _with_engine(db_url: str | None, work: Callable[[Any, str], int | None]) -> None:
    from connguard.db.session import SchemaError, default_db_url, make_engine

    url = db_url or default_db_url()
    try:
        engine = make_engine(url)
    except Exception as exc:  # noqa: BLE001 - a URL we cannot use: say which and why
        click.echo(f"Error: cannot open the database {_shown(url)}: {exc}", err=True)
        sys.exit(EXIT_ERROR)
    try:
        code = work(engine, url)
    except SchemaError as exc:
        click.echo(f"Error: {exc}", err=True)
        code = EXIT_NEWER
    except Exception as exc:  # noqa: BLE001 - a database we cannot reach: say which and why
        click.echo(f"Error: cannot open the database {_shown(url)}: {exc}", err=True)
        code = EXIT_ERROR
    finally:
        engine.dispose()
    sys.exit(code or 0)


@click.group("db")
def db() -> None:
    """The server database's schema: upgrade it, check it, show its revision."""


@db.command("upgrade")
@db_option
def upgrade(db_url: str | None) -> None:
    """Upgrade the database to this connguard's newest schema, one line per revision applied.

    Safe to run while servers start or serve: upgrades take a lock (PostgreSQL: an advisory
    lock; SQLite: the database's write lock), and one that waited finds nothing left to do."""
    from connguard.db.session import migrate

    def work(engine: Any, url: str) -> None:
        def step(down: str | None, up: str, title: str, seconds: float) -> None:
            click.echo(f"  {down or '(empty)'} -> {up}  {title}  ({seconds:.2f} s)")

        click.echo(f"Upgrading {_shown(url)}")
        status = migrate(engine, on_step=step)
        if status.pending:
            click.echo(f"OK: the database is at revision {status.head} (head), "
                       f"{len(status.pending)} revision{'s' if len(status.pending) > 1 else ''} applied")
        else:
            click.echo(f"OK: the database is at revision {status.head} (head), nothing to do")

    _with_engine(db_url, work)


@db.command("check")
@db_option
def check(db_url: str | None) -> None:
    """Exit 0 when the database is at this connguard's schema; otherwise say why and exit 3
    (empty or behind: connguard db upgrade), 4 (newer than this connguard, or not a connguard
    database) or 1 (cannot be opened)."""
    from connguard.db.session import schema_status

    def work(engine: Any, url: str) -> int:
        status = schema_status(engine)
        error = status.error()
        if error is None:
            click.echo(f"OK: the database is at revision {status.head}, this connguard's head")
            return 0
        click.echo(f"Error: {error}", err=True)
        return EXIT_NEWER if status.state == "newer" else EXIT_BEHIND

    _with_engine(db_url, work)


@db.command("current")
@db_option
def current(db_url: str | None) -> None:
    """Print the database's revision ("0006 (head)" when it is this connguard's newest;
    nothing, and a note on stderr, for an empty database)."""
    from connguard.db.session import schema_status

    def work(engine: Any, url: str) -> None:
        status = schema_status(engine)
        if status.current is None:
            click.echo("the database has no connguard schema", err=True)
        elif status.state == "current":
            click.echo(f"{status.current} (head)")
        elif status.state == "newer":
            click.echo(f"{status.current} (unknown to this connguard: newer, or not a connguard database)")
        else:
            click.echo(status.current)

    _with_engine(db_url, work)
