"""``connguard agent --state-file FILE [--netns NS]``: keep a state file applied (standalone)."""

from __future__ import annotations

import fcntl
import logging
import signal

import click

from connguard.cli.common import agent_dir, fail, netns_option
from connguard.exceptions import ConnguardError


@click.group("agent", invoke_without_command=True)
@click.option("--state-file", type=click.Path(dir_okay=False), help="Standalone mode: the YAML state to enforce.")
@click.option("--server", metavar="URL", help="Server mode (not available yet; see issue tracker).")
@netns_option
@click.option("--interval", type=click.FloatRange(0.1, 60), default=1.0, show_default=True,
              help="Seconds between reconciliation passes (state file, bans).")
@click.option("--drift-interval", type=click.FloatRange(1, 3600), default=10.0, show_default=True,
              help="Seconds between comparisons of the kernel with what was applied.")
@click.option("-v", "--verbose", is_flag=True)
@click.pass_context
def agent_cmd(ctx: click.Context, state_file: str | None, server: str | None, netns: str | None, interval: float,
              drift_interval: float, verbose: bool) -> None:
    """Run the host agent: apply, repair drift, persist and escalate bans.

    'connguard agent list' lists the agents known to the server instead."""
    if ctx.invoked_subcommand is not None:
        return
    from connguard.agent.standalone import StandaloneAgent
    from connguard.nft import NftCli

    if server or not state_file:
        raise click.UsageError("give --state-file FILE (server mode arrives with the control plane)")
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s")
    workdir = agent_dir(netns)
    workdir.mkdir(parents=True, exist_ok=True)
    lock = open(workdir / "agent.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise click.ClickException(f"another agent already runs for {netns or 'this host'} ({workdir})") from None
    try:
        agent = StandaloneAgent(state_file, NftCli(netns), workdir, interval=interval, drift_interval=drift_interval)
    except (ConnguardError, RuntimeError) as exc:
        raise fail(exc) if isinstance(exc, ConnguardError) else click.ClickException(str(exc)) from None
    signal.signal(signal.SIGTERM, lambda *_: agent.stop())
    signal.signal(signal.SIGINT, lambda *_: agent.stop())
    logging.getLogger("connguard.agent").info("agent started for %s (state %s)", netns or "this host", state_file)
    agent.run()


def _register_list() -> None:
    from connguard.cli.resources.agent import agent as resource_group

    agent_cmd.add_command(resource_group.commands["list"], "list")


_register_list()
