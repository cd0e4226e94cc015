"""``connguard agent --state-file FILE [--netns NS]``: keep a state file applied (standalone);
``connguard agent --server URL --token-file F --host NAME [--netns NS] [--interfaces 'tap*']``:
follow the server's desired state for this host and report back."""

from __future__ import annotations

import fcntl
import logging
import signal
import socket
from pathlib import Path

import click

from connguard.cli.common import agent_dir, fail, netns_option
from connguard.exceptions import ConnguardError


@click.group("agent", invoke_without_command=True)
@click.option("--state-file", type=click.Path(dir_okay=False), help="Standalone mode: the YAML state to enforce.")
@click.option("--server", metavar="URL", help="Server mode: the connguard server's URL (http://HOST:9696).")
@click.option("--token", envvar="CONNGUARD_AGENT_TOKEN", metavar="T",
              help="Server mode: this host's agent token (env CONNGUARD_AGENT_TOKEN; prefer --token-file: "
                   "a command line is visible to every user through ps).")
@click.option("--token-file", type=click.Path(dir_okay=False, exists=True), help="Server mode: a file holding the token.")
@click.option("--host", "host", metavar="NAME", help="Server mode: this host's name (binding:host_id); default: the hostname.")
@click.option("--interfaces", default="tap*", show_default=True, metavar="PATTERN",
              help="Server mode: interfaces to report as discovered ports (shell pattern).")
@click.option("--report-interval", type=click.FloatRange(0.2, 300), default=5.0, show_default=True,
              help="Server mode: seconds between reports (a detected ban is reported at once).")
@click.option("--workdir", type=click.Path(file_okay=False), help="Where the agent keeps its ban book, cached "
              "snapshot and report queue (default: the data directory's agent/<netns>).")
@netns_option
@click.option("--interval", type=click.FloatRange(0.1, 60), default=1.0, show_default=True,
              help="Seconds between reconciliation passes (state file, bans).")
@click.option("--drift-interval", type=click.FloatRange(1, 3600), default=10.0, show_default=True,
              help="Seconds between comparisons of the kernel with what was applied.")
@click.option("-v", "--verbose", is_flag=True)
@click.pass_context
def agent_cmd(ctx: click.Context, state_file: str | None, server: str | None, token: str | None,
              token_file: str | None, host: str | None, interfaces: str, report_interval: float,
              workdir: str | None, netns: str | None, interval: float, drift_interval: float, verbose: bool) -> None:
    """Run the host agent: apply, repair drift, persist and escalate bans.

    'connguard agent list' lists the agents known to the server instead."""
    if ctx.invoked_subcommand is not None:
        return
    from connguard.agent.standalone import StandaloneAgent
    from connguard.nft import make_executor

    if bool(server) == bool(state_file):
        raise click.UsageError("give either --state-file FILE (standalone) or --server URL (server mode)")
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    if token and ctx.get_parameter_source("token") == click.core.ParameterSource.COMMANDLINE:
        logging.getLogger("connguard.agent").warning(
            "--token on the command line is visible to every user (ps); use --token-file")
    if server:
        _server_mode(server, token, token_file, host, netns, interfaces, report_interval, workdir, interval,
                     drift_interval)
        return
    workdir = Path(workdir) if workdir else agent_dir(netns)
    workdir.mkdir(parents=True, exist_ok=True)
    lock = open(workdir / "agent.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise click.ClickException(f"another agent already runs for {netns or 'this host'} ({workdir})") from None
    try:
        agent = StandaloneAgent(state_file, make_executor(netns), workdir, interval=interval, drift_interval=drift_interval)
    except (ConnguardError, RuntimeError) as exc:
        raise fail(exc) if isinstance(exc, ConnguardError) else click.ClickException(str(exc)) from None
    signal.signal(signal.SIGTERM, lambda *_: agent.stop())
    signal.signal(signal.SIGINT, lambda *_: agent.stop())
    logging.getLogger("connguard.agent").info("agent started for %s (state %s)", netns or "this host", state_file)
    agent.run()


def _server_mode(server: str, token: str | None, token_file: str | None, host: str | None, netns: str | None,
                 interfaces: str, report_interval: float, workdir: str | None, interval: float,
                 drift_interval: float) -> None:
    from connguard.agent import AgentBusy, ServerAgent

    if token_file:
        token = Path(token_file).read_text().strip()
    if not token:
        raise click.UsageError("server mode needs --token-file FILE (or --token, or CONNGUARD_AGENT_TOKEN)")
    host = host or socket.gethostname()
    try:
        agent = ServerAgent(server, token, host, netns=netns, workdir=workdir, interfaces=interfaces,
                            interval=interval, drift_interval=drift_interval, report_interval=report_interval)
    except (ConnguardError, RuntimeError) as exc:
        raise fail(exc) if isinstance(exc, ConnguardError) else click.ClickException(str(exc)) from None
    signal.signal(signal.SIGTERM, lambda *_: agent.stop())
    signal.signal(signal.SIGINT, lambda *_: agent.stop())
    try:
        agent.run()
    except AgentBusy as exc:
        raise click.ClickException(str(exc)) from None


def _register_list() -> None:
    from connguard.cli.resources.agent import agent as resource_group

    agent_cmd.add_command(resource_group.commands["list"], "list")


_register_list()
