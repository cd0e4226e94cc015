"""``connguard agent --state-file FILE [--netns NS]``: keep a state file applied (standalone);
``connguard agent --server URL --token-file F --host NAME [--netns NS] [--interfaces 'tap*']``:
follow the server's desired state for this host and report back.

Every setting also comes from the ``[agent]`` table of the config file or from
``CONNGUARD_AGENT_<KEY>`` (cli/daemon_config.py: flag > environment > file > default). Under
systemd it signals readiness after its first full apply and reloads on SIGHUP
(cli/agent_daemon.py)."""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import sys
from typing import Any
import threading

import click

from connguard.cli.common import agent_dir, fail
from connguard.exceptions import ConnguardError

log = logging.getLogger("connguard.agent")
CONFIG_ERROR = 2  # exit status of an unusable configuration: the units do not restart on it


def _abs(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    return None if value is None else os.path.abspath(value)


def _setting(key: str) -> str:
    from connguard.cli.daemon_config import SCHEMA, env_name

    spec = SCHEMA["agent"][key]
    default = "" if spec.default is None else f"; default {spec.default}"
    return f"{spec.help[0].upper()}{spec.help[1:]} (env {env_name('agent', key)}, config agent.{key}{default})."


@click.group("agent", invoke_without_command=True)
@click.option("--config", "config", metavar="FILE", help="Daemon config file (env CONNGUARD_CONFIG; default "
              "/etc/connguard/connguard.toml, used if present).")
@click.option("--state-file", type=click.Path(dir_okay=False), callback=_abs, help=_setting("state_file"))
@click.option("--server", metavar="URL", help=_setting("server"))
@click.option("--token", envvar="CONNGUARD_AGENT_TOKEN", metavar="T",
              help="Deprecated: the token itself (env CONNGUARD_AGENT_TOKEN); a command line and an environment "
                   "are visible to other users (ps, /proc): use --token-file.")
@click.option("--token-file", type=click.Path(dir_okay=False), callback=_abs, help=_setting("token_file"))
@click.option("--host", "host", metavar="NAME", help=_setting("host"))
@click.option("--interfaces", metavar="PATTERN", help=_setting("interfaces"))
@click.option("--report-interval", type=float, help=_setting("report_interval"))
@click.option("--workdir", type=click.Path(file_okay=False), callback=_abs, help=_setting("workdir"))
@click.option("--netns", metavar="NS", help=_setting("netns"))
@click.option("--interval", type=float, help=_setting("interval"))
@click.option("--drift-interval", type=float, help=_setting("drift_interval"))
@click.option("--start-timeout", type=float, help=_setting("start_timeout"))
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]),
              help=_setting("log_level"))
@click.option("--log-format", type=click.Choice(["text", "json"]), help=_setting("log_format"))
@click.option("--metrics-listen", metavar="ADDR:PORT", help=_setting("metrics_listen"))
@click.option("-v", "--verbose", is_flag=True, help="Same as --log-level debug.")
@click.pass_context
def agent_cmd(ctx: click.Context, config: str | None, token: str | None, verbose: bool, **flags: Any) -> None:
    """Run the host agent: apply, repair drift, persist and escalate bans.

    'connguard agent list' lists the agents known to the server instead."""
    if ctx.invoked_subcommand is not None:
        return
    from connguard.cli import logsetup
    from connguard.cli.daemon_config import ConfigError, read_secret, resolve

    if verbose and flags["log_level"] is None:
        flags["log_level"] = "debug"
    try:
        cfg, origin, path = resolve("agent", flags, config=config)
    except ConfigError as exc:
        click.echo("connguard agent: configuration error:\n  " + "\n  ".join(exc.problems), err=True)
        sys.exit(CONFIG_ERROR)
    logsetup.setup(cfg["log_level"], cfg["log_format"])
    # a mode chosen on the command line wins over the other mode set in the file or environment
    for mine, other in (("server", "state_file"), ("state_file", "server")):
        if origin[mine] == "flag" and origin[other] != "flag":
            cfg[other] = None
    if bool(cfg["server"]) == bool(cfg["state_file"]):
        raise click.UsageError("give either --state-file FILE (standalone) or --server URL (server mode), "
                               f"on the command line or in {path} [agent]")
    if token and ctx.get_parameter_source("token") == click.core.ParameterSource.COMMANDLINE:
        log.warning("--token on the command line is visible to every user (ps); use --token-file")
    elif token:
        log.warning("CONNGUARD_AGENT_TOKEN is visible in /proc/PID/environ; use --token-file (agent.token_file)")
    if cfg["server"]:
        if cfg["token_file"]:
            try:
                token = read_secret(cfg["token_file"], "agent.token_file")
            except ConfigError as exc:
                click.echo(f"connguard agent: configuration error:\n  {exc}", err=True)
                sys.exit(CONFIG_ERROR)
        if not token:
            raise click.UsageError("server mode needs --token-file FILE (agent.token_file in the config file)")
        sys.exit(_server_mode(cfg, token, flags, config))
    sys.exit(_standalone(cfg, flags, config))


def _reloader(flags: dict[str, Any], config: str | None, cfg: dict[str, Any], apply: dict[str, Any]):
    """SIGHUP's config step: re-resolve with the same flags; apply the keys that can change
    live (``apply``: key -> setter), log the others as needing a restart. Raises ConfigError."""
    from connguard.cli import logsetup
    from connguard.cli.daemon_config import SCHEMA, resolve

    def reload() -> None:
        new, _, path = resolve("agent", flags, config=config)
        for key, value in new.items():
            if value == cfg[key]:
                continue
            if SCHEMA["agent"][key].reload and (key in apply or key == "log_level"):
                (logsetup.set_level if key == "log_level" else apply[key])(value)
                log.info("SIGHUP: agent.%s is now %s (was %s)", key, value, cfg[key])
                cfg[key] = value
            else:
                log.warning("SIGHUP: agent.%s changed in %s to %s: it takes effect at the next restart", key, path,
                            value)
    return reload


def _standalone(cfg: dict[str, Any], flags: dict[str, Any], config: str | None) -> int:
    from connguard.agent.standalone import StandaloneAgent
    from connguard.cli.agent_daemon import AgentLifecycle
    from connguard.nft import make_executor

    netns = cfg["netns"]
    workdir = cfg["workdir"] or agent_dir(netns)
    workdir.mkdir(parents=True, exist_ok=True)
    lock = open(workdir / "agent.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise click.ClickException(f"another agent already runs for {netns or 'this host'} ({workdir})") from None
    try:
        agent = StandaloneAgent(cfg["state_file"], make_executor(netns), workdir, interval=cfg["interval"],
                                drift_interval=cfg["drift_interval"])
    except (ConnguardError, RuntimeError) as exc:
        raise fail(exc) if isinstance(exc, ConnguardError) else click.ClickException(str(exc)) from None
    apply = {"interval": lambda v: setattr(agent, "interval", v),
             "drift_interval": lambda v: setattr(agent, "drift_interval", v)}
    life = AgentLifecycle(agent, agent.stop, start_timeout=cfg["start_timeout"], standalone=True,
                          reload_config=_reloader(flags, config, cfg, apply))
    life.install_signals()
    log.info("agent started for %s (state %s)", netns or "this host", cfg["state_file"])
    done = threading.Event()
    _metrics(cfg["metrics_listen"], reconciler=agent, reporter=None, host=cfg["host"] or socket.gethostname(),
             stop=done)
    try:
        agent.run()
    finally:
        done.set()
    if life.rc == 0:
        log.info("agent stopped; the kernel keeps enforcing the last applied state")
    return life.rc


def _metrics(listen: str | None, **kw) -> None:
    if not listen:
        return
    from connguard.cli.up_metrics import serve

    try:
        addr, port = serve(listen, **kw)
    except (ValueError, OSError) as exc:
        raise click.ClickException(f"--metrics-listen {listen}: {exc}") from None
    log.info("agent metrics on http://%s:%d/metrics", addr, port)


def _server_mode(cfg: dict[str, Any], token: str, flags: dict[str, Any], config: str | None) -> int:
    from connguard.agent import AgentBusy, ServerAgent
    from connguard.cli.agent_daemon import AgentLifecycle

    host = cfg["host"] or socket.gethostname()
    try:
        agent = ServerAgent(cfg["server"], token, host, netns=cfg["netns"], workdir=cfg["workdir"],
                            interfaces=cfg["interfaces"], interval=cfg["interval"],
                            drift_interval=cfg["drift_interval"], report_interval=cfg["report_interval"])
    except (ConnguardError, RuntimeError) as exc:
        raise fail(exc) if isinstance(exc, ConnguardError) else click.ClickException(str(exc)) from None
    rec = agent.reconciler
    apply = {"interval": lambda v: setattr(rec, "interval", v),
             "drift_interval": lambda v: setattr(rec, "drift_interval", v),
             "report_interval": lambda v: setattr(agent.reporter, "interval", v)}
    life = AgentLifecycle(rec, agent.stop, start_timeout=cfg["start_timeout"], standalone=False,
                          reload_config=_reloader(flags, config, cfg, apply),
                          refetch=lambda: agent.source.fetch_once(None, 0))
    life.install_signals()
    _metrics(cfg["metrics_listen"], reconciler=agent.reconciler, reporter=agent.reporter, host=host,
             stop=agent.stop_event)
    try:
        agent.run()
    except AgentBusy as exc:
        raise click.ClickException(str(exc)) from None
    return life.rc


def _register_list() -> None:
    from connguard.cli.resources.agent import agent as resource_group

    agent_cmd.add_command(resource_group.commands["list"], "list")


_register_list()
