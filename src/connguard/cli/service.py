"""``connguard service install [--role server|agent] [--root DIR | --dest DIR]``: write the
systemd units shipped in the package (cli/units/) and, if there is none, a commented config
file; print what was written and the ``systemctl`` commands to run. ``connguard service show
ROLE`` prints a unit as it would be installed.

The units' ``ExecStart`` names this very ``connguard`` (the one beside the running Python, i.e.
the virtual environment's), so the service runs the code that installed it."""

from __future__ import annotations

import os
import shutil
import sys
from importlib import resources
from pathlib import Path

import click

ROLES = ("server", "agent")
UNIT_DIR = Path("etc/systemd/system")
CONFIG = Path("etc/connguard/connguard.toml")

EXAMPLE_CONFIG = """\
# connguard daemons' settings (docs/operations.md). Precedence for each key: command-line flag,
# then environment (CONNGUARD_SERVER_<KEY>, CONNGUARD_AGENT_<KEY>), then this file, then the
# default. Unknown keys are refused. Secrets go in files of mode 0600 or 0400, named here.
# After an edit: systemctl reload connguard-agent (or connguard-server).

[server]
# db = "sqlite:////var/lib/connguard/connguard.db"
# db = "postgresql+psycopg://connguard@db.example/connguard"
# database_password_file = "/etc/connguard/db-password"
# bind = "127.0.0.1:9696"
# log_level = "info"
# log_format = "text"        # or "json"
# widest_prefix = "16,32"

[agent]
# standalone: enforce a state file
# state_file = "/etc/connguard/state.yaml"
# or follow a server
# server = "http://127.0.0.1:9696"
# token_file = "/etc/connguard/agent.token"
# host = "compute-1"
# interfaces = "tap*"
# netns = "..."
# interval = 1.0
# drift_interval = 10.0
# report_interval = 5.0
# start_timeout = 60.0
# log_level = "info"
"""


def unit_text(role: str, binary: str) -> str:
    text = resources.files("connguard.cli.units").joinpath(f"connguard-{role}.service").read_text()
    return text.replace("@CONNGUARD@", binary)


def default_binary() -> str:
    beside = Path(sys.executable).parent / "connguard"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("connguard")
    if found:
        return os.path.abspath(found)
    raise click.ClickException("cannot find the connguard command to put in ExecStart: give --bin PATH")


@click.group("service")
def service() -> None:
    """systemd units for the server and the agent."""


@service.command("install")
@click.option("--role", "roles", type=click.Choice(ROLES), multiple=True,
              help="Which unit (repeatable; default: both).")
@click.option("--root", type=click.Path(file_okay=False), default="/", show_default=True,
              help="Install under this root (units in ROOT/etc/systemd/system, config in ROOT/etc/connguard).")
@click.option("--dest", type=click.Path(file_okay=False), help="Write the units into this directory instead "
              "(no config file).")
@click.option("--bin", "binary", metavar="PATH", help="The connguard command ExecStart runs "
              "(default: the one beside this Python).")
def install(roles: tuple[str, ...], root: str, dest: str | None, binary: str | None) -> None:
    """Write connguard-server.service and/or connguard-agent.service, and an example config."""
    binary = os.path.abspath(binary) if binary else default_binary()
    if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
        raise click.BadParameter(f"{binary} is not an executable file", param_hint="'--bin'")
    roles = roles or ROLES
    for path in hidden_paths(binary):
        click.echo(f"warning: {path} is under /home, /root or /run/user, which the units hide "
                   "(ProtectHome=yes): install connguard elsewhere, e.g. a virtual environment in /opt/connguard",
                   err=True)
    unit_dir = Path(dest) if dest else Path(root) / UNIT_DIR
    try:
        unit_dir.mkdir(parents=True, exist_ok=True)
        for role in roles:
            path = unit_dir / f"connguard-{role}.service"
            text = unit_text(role, binary)
            state = "unchanged" if path.exists() and path.read_text() == text else \
                "updated" if path.exists() else "written"
            if state != "unchanged":
                tmp = path.with_name(path.name + ".tmp")
                tmp.write_text(text)
                os.chmod(tmp, 0o644)
                os.replace(tmp, path)
            click.echo(f"{path}: {state}")
        if not dest:
            cfg = Path(root) / CONFIG
            if cfg.exists():
                click.echo(f"{cfg}: kept (exists)")
            else:
                cfg.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
                cfg.write_text(EXAMPLE_CONFIG)
                os.chmod(cfg, 0o644)  # no secret in it: secrets live in their own 0600 files
                click.echo(f"{cfg}: written (an example: every key commented out)")
    except OSError as exc:
        raise click.ClickException(f"cannot write {exc.filename}: {exc.strerror}") from None
    units = " ".join(f"connguard-{r}" for r in roles)
    click.echo("next:\n  systemctl daemon-reload\n"
               f"  systemctl enable --now {units}\n"
               f"  systemctl status {units}   # journalctl -u connguard-agent for the logs\n"
               f"  systemctl reload {units}   # after editing the config or the state file (SIGHUP)")


HIDDEN = ("/home/", "/root/", "/run/user/")  # ProtectHome=yes makes these inaccessible to the units


def hidden_paths(binary: str) -> list[str]:
    """The command and its script's interpreter, where ProtectHome=yes would hide them."""
    paths = [os.path.realpath(binary)]
    try:
        with open(binary, "rb") as fh:
            first = fh.readline(512)
    except OSError:
        first = b""
    if first.startswith(b"#!"):
        interpreter = first[2:].split()[0].decode(errors="replace") if first[2:].split() else ""
        if interpreter:
            paths.append(os.path.realpath(interpreter))
    return [p for p in paths if p.startswith(HIDDEN)]


@service.command("show")
@click.argument("role", type=click.Choice(ROLES))
@click.option("--bin", "binary", metavar="PATH", help="The connguard command ExecStart runs.")
def show(role: str, binary: str | None) -> None:
    """Print the unit of ROLE (server or agent) as 'install' would write it."""
    click.echo(unit_text(role, os.path.abspath(binary) if binary else default_binary()), nl=False)
