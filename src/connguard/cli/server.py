"""``connguard server --db URL --bind HOST:PORT``: migrate the database, then serve the API.

Every setting also comes from the ``[server]`` table of the config file or from
``CONNGUARD_SERVER_<KEY>`` (cli/daemon_config.py: flag > environment > file > default). Under
systemd: ``READY=1`` once the API answers an HTTP request on its own address; SIGHUP re-reads
the config and applies what can change live (log level, widest prefix), logging what needs a
restart; SIGTERM stops (uvicorn's handler) with a log line."""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from typing import Any

import click

from connguard.cli.daemon_config import SCHEMA, env_name

DEFAULT_BIND = "127.0.0.1:9696"  # Neutron's port
CONFIG_ERROR = 2
log = logging.getLogger("connguard.server")


def parse_bind(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{value!r} is not HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


def _setting(key: str, default: str = "") -> str:
    spec = SCHEMA["server"][key]
    return (f"{spec.help[0].upper()}{spec.help[1:]} (env {env_name('server', key)}, config server.{key}"
            f"{'; default ' + default if default else ''}).")


@click.command("server")
@click.option("--config", "config", metavar="FILE", help="Daemon config file (env CONNGUARD_CONFIG; default "
              "/etc/connguard/connguard.toml, used if present).")
@click.option("--db", metavar="URL", help=_setting("db"))
@click.option("--database-password-file", metavar="FILE", help=_setting("database_password_file"))
@click.option("--bind", metavar="HOST:PORT", help=_setting("bind", DEFAULT_BIND))
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              help=_setting("log_level", "info"))
@click.option("--log-format", type=click.Choice(["text", "json"]), help=_setting("log_format", "text"))
@click.option("--widest-prefix", metavar="V4,V6",
              help=_setting("widest_prefix", "16,32") + " Wider needs \"force\": true (connguard ban add --force).")
@click.option("--migrate/--no-migrate", "migrate", default=None,
              help="Upgrade the database schema at start (under a lock: servers started at once wait for one "
                   "another) or refuse to start unless it is current. Default: migrate an SQLite database; on "
                   "PostgreSQL refuse, naming connguard db upgrade.")
def server_cmd(config: str | None, migrate: bool | None, **flags: Any) -> None:
    """Run the REST API server (migrates an SQLite database first; see --migrate)."""
    import os

    from connguard.cli import logsetup
    from connguard.cli.common import data_dir
    from connguard.cli.daemon_config import (
        ConfigError, check_db_url, create_private, read_secret, resolve, sqlite_path, with_password,
    )
    from connguard.cli.sd_notify import Notifier

    def default_db_url() -> str:  # db/session.default_db_url, without importing SQLAlchemy for it
        return f"sqlite:///{data_dir() / 'connguard.db'}"

    from connguard.extras import MissingExtra, require_for_db

    try:  # first: an agent-only install says what to install before anything else is checked
        require_for_db(flags.get("db") or os.environ.get(env_name("server", "db")) or "sqlite://",
                       "connguard server")
    except MissingExtra as exc:
        raise click.ClickException(str(exc)) from None
    if flags.get("database_password_file"):
        flags["database_password_file"] = os.path.abspath(flags["database_password_file"])
    try:
        cfg, _origin, path = resolve("server", flags, config=config)
        url = cfg["db"] or default_db_url()
        if not cfg["db"]:
            # the embedded default is the server's own: its directory is made (0700) as
            # `connguard up` makes it; a database URL the operator gave is never created blindly
            data_dir().mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                check_db_url(url)
            except ValueError as exc:
                raise ConfigError([f"server.db (default, under CONNGUARD_DATA_DIR): {exc}"]) from None
        if cfg["database_password_file"]:
            url = with_password(url, read_secret(cfg["database_password_file"], "server.database_password_file"))
        db_file = sqlite_path(url)
        if db_file is not None:
            if not db_file.parent.is_dir():
                raise ConfigError([f"server.db: the directory {db_file.parent} does not exist "
                                   "(it is not created: check the path)"])
            create_private(db_file)
    except ConfigError as exc:
        click.echo("connguard server: configuration error:\n  " + "\n  ".join(exc.problems), err=True)
        sys.exit(CONFIG_ERROR)
    logsetup.setup(cfg["log_level"], cfg["log_format"])
    if db_file is not None and db_file.stat().st_mode & 0o077:
        log.warning("the database %s is readable by group or others (mode %04o; it holds token hashes): "
                    "chmod 600 %s", db_file, db_file.stat().st_mode & 0o777, db_file)
    # the heavy imports only once the settings are known good: a config error is reported at once
    import uvicorn

    from connguard.db.services.security import WidestPrefix
    from connguard.db.session import SchemaError
    from connguard.server import create_app

    host, port = cfg["bind"]
    shown = cfg["db"] or default_db_url()  # never the URL with the password in it
    # The embedded SQLite database is this server's own: bring it along. A shared database
    # (PostgreSQL) is upgraded when the operator says so, as neutron-db-manage's is.
    if migrate is None:
        migrate = url.startswith("sqlite")
    try:
        app = create_app(url, run_migrations=migrate, require_current=True,
                         widest_prefix=WidestPrefix(*cfg["widest_prefix"]))
    except SchemaError as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - a database we cannot open: say which and why
        raise click.ClickException(f"cannot open the database {shown}: {exc}") from None
    notifier = Notifier()
    _Server = _server_class()
    # Long-polls may be waiting for minutes: on shutdown give requests 5 s, then close.
    # log_config=None: uvicorn's loggers propagate to ours (one format, timestamps or journal).
    # log_level not given to uvicorn either: its loggers then follow ours, SIGHUP included.
    server = _Server(uvicorn.Config(app, host=host, port=port, log_config=None, timeout_graceful_shutdown=5))
    server.notifier = notifier
    # uvicorn takes SIGTERM/SIGINT while it runs and raises them again once it has shut down:
    # these handlers then end the process cleanly (exit 0) with a last log line.
    signal.signal(signal.SIGTERM, _stopped)
    signal.signal(signal.SIGINT, _stopped)
    signal.signal(signal.SIGHUP, lambda *_: threading.Thread(
        target=_reload, args=(app, flags, config, cfg, notifier), name="connguard-reload", daemon=True).start())
    threading.Thread(target=_ready, args=(server, host, port, shown, notifier), name="connguard-ready",
                     daemon=True).start()
    server.run()
    if not server.started:
        sys.exit(1)  # uvicorn logged why (a busy port, say)
    log.info("server stopped")


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        notifier: Any = None

        def handle_exit(self, sig: int, frame: Any) -> None:
            if not self.should_exit:
                log.info("%s: stopping (requests in flight get 5 s)", signal.Signals(sig).name)
                if self.notifier is not None:
                    self.notifier.stopping("stopping")
            super().handle_exit(sig, frame)

    return Server


def _stopped(signum: int, _frame: Any) -> None:
    log.info("server stopped (%s)", signal.Signals(signum).name)
    sys.exit(0)


def _ready(server: Any, host: str, port: int, db: str, notifier: Any) -> None:
    """READY=1 once the API answers ``GET /`` on its own address (not merely once it is bound)."""
    import httpx

    target = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    url = f"http://{f'[{target}]' if ':' in target else target}:{port}/"
    while not server.should_exit:
        if server.started:
            try:
                if httpx.get(url, timeout=2.0).status_code == 200:
                    status = f"serving the API on {host}:{port}, database {db}"
                    log.info("ready: %s", status)
                    notifier.ready(status)
                    return
            except httpx.HTTPError:
                pass
        time.sleep(0.05)


def _reload(app: Any, flags: dict[str, Any], config: str | None, cfg: dict[str, Any], notifier: Any) -> None:
    from connguard.cli import logsetup
    from connguard.cli.daemon_config import ConfigError, resolve
    from connguard.db.services.security import WidestPrefix

    log.info("SIGHUP: reloading the configuration")
    notifier.reloading("reloading the configuration")
    try:
        new, _, path = resolve("server", flags, config=config)
    except ConfigError as exc:
        log.error("SIGHUP: configuration not reloaded, the running settings stay: %s", "; ".join(exc.problems))
        notifier.ready("configuration rejected at reload; running settings unchanged")
        return
    for key, value in new.items():
        if value == cfg[key]:
            continue
        if key == "log_level":
            logsetup.set_level(value)
        elif key == "widest_prefix":
            app.state.widest_prefix = WidestPrefix(*value)
        else:
            log.warning("SIGHUP: server.%s changed in %s: it takes effect at the next restart", key, path)
            continue
        log.info("SIGHUP: server.%s is now %s (was %s)", key, value, cfg[key])
        cfg[key] = value
    notifier.ready("serving the API; configuration reloaded")
