"""``connguard server --db URL --bind HOST:PORT``: migrate the database, then serve the API."""

from __future__ import annotations

import click

DEFAULT_BIND = "127.0.0.1:9696"  # Neutron's port


def parse_bind(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{value!r} is not HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def _widest(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, int]:
    v4, sep, v6 = value.partition(",")
    if not (sep and v4.isdigit() and v6.isdigit() and int(v4) <= 32 and int(v6) <= 128):
        raise click.BadParameter(f"{value!r} is not V4,V6 prefix lengths (0-32,0-128), e.g. 16,32")
    return int(v4), int(v6)


@click.command("server")
@click.option("--db", "db_url", metavar="URL", help="SQLAlchemy URL: sqlite:///PATH or postgresql+psycopg://... "
              "(default: SQLite under $CONNGUARD_DATA_DIR or /var/lib/connguard).")
@click.option("--bind", default=DEFAULT_BIND, show_default=True, metavar="HOST:PORT")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--widest-prefix", default="16,32", show_default=True, metavar="V4,V6", callback=_widest,
              help="Widest IPv4,IPv6 prefix length taken for a ban or a cloud-wide allowlist entry "
                   "without \"force\": true (connguard ban add --force).")
def server_cmd(db_url: str | None, bind: str, log_level: str, widest_prefix: tuple[int, int]) -> None:
    """Run the REST API server (migrates the database first)."""
    from connguard.extras import MissingExtra, require_for_db

    try:
        require_for_db(db_url or "sqlite://", "connguard server")
    except MissingExtra as exc:
        raise click.ClickException(str(exc)) from None
    import uvicorn

    from connguard.db.services.security import WidestPrefix
    from connguard.db.session import SchemaTooNew, default_db_url
    from connguard.server import create_app

    host, port = parse_bind(bind)
    url = db_url or default_db_url()
    try:
        app = create_app(url, widest_prefix=WidestPrefix(*widest_prefix))
    except SchemaTooNew as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - a database we cannot open: say which and why
        raise click.ClickException(f"cannot open the database {url}: {exc}") from None
    # Long-polls may be waiting for minutes: on shutdown give requests 5 s, then close.
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
