"""``connguard apply STATE.yaml [--netns NS] [--dry-run]``: compile a state file and apply it
once. A bad file exits 1 naming the field, and the kernel is not touched."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from connguard.cli.common import agent_dir, fail, netns_option
from connguard.exceptions import ConnguardError


@click.command("apply")
@click.argument("state_file", type=click.Path(dir_okay=False))
@netns_option
@click.option("--dry-run", is_flag=True, help="Print the nftables batch (libnftables JSON) and touch nothing.")
@click.option("--check", is_flag=True,
              help="Have the kernel check the batch against what it holds now (nft --check); change nothing.")
def apply_cmd(state_file: str, netns: str | None, dry_run: bool, check: bool) -> None:
    """Compile STATE_FILE and apply it to the kernel in one atomic batch."""
    # imported here, not at the top: `apply --help` must not load the compiler (cli/main.py)
    from connguard.agent.statusfile import write_status
    from connguard.compiler import compile_host
    from connguard.model import load_state_file
    from connguard.nft import Applier, FakeExecutor, NftCli

    try:
        state = load_state_file(state_file)
        ruleset = compile_host(state)
        if dry_run:
            # Planned against an empty kernel: the whole ruleset, as it would be loaded.
            applier = Applier(FakeExecutor())
            _, cmds = applier.plan(ruleset)
            click.echo(json.dumps({"nftables": [c for c, _ in cmds]}, indent=1))
            return
        if check:
            Applier(NftCli(netns)).apply(ruleset, check=True)
            click.echo(f"ok: the kernel{' in netns ' + netns if netns else ''} would accept this state", err=True)
            return
        result = Applier(NftCli(netns)).apply(ruleset)
        for warning in result.warnings:
            click.echo(f"warning: {warning}", err=True)
        write_status(agent_dir(netns), state=state, ruleset=ruleset, source=str(Path(state_file).resolve()),
                     netns=netns, now=time.time(), pid=None, last_error=None,
                     last_apply={"mode": result.mode, "commands": result.commands, "seconds": round(result.seconds, 4)})
    except ConnguardError as exc:
        raise fail(exc) from None
    ports = len(ruleset.port_policy)
    click.echo(f"applied: {ports} protected port(s), {len(state.policies)} polic{'y' if len(state.policies) == 1 else 'ies'}, "
               f"{result.commands} commands in {result.seconds * 1000:.0f} ms"
               + (f" in netns {netns}" if netns else ""), err=True)
