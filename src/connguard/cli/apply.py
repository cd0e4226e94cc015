"""``connguard apply STATE.yaml [--netns NS] [--dry-run [--format json|nft]] [--check]``: compile a
state file and apply it once. A bad file exits 1 naming the field, and the kernel is not
touched. A good one prints what changed since the last apply here (ports, policies, rules),
warnings as sentences (a port whose interface does not exist yet, a state ban the kernel
refused), and, once, any namespace-wide sysctl the apply changed."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import click

from connguard.cli.common import agent_dir, fail, netns_option
from connguard.exceptions import ConnguardError, KernelUnavailable
from connguard.names import FAMILY, TABLE


@click.command("apply")
@click.argument("state_file", type=click.Path(dir_okay=False))
@netns_option
@click.option("--dry-run", is_flag=True, help="Print the ruleset that would be loaded (see --format); touch nothing.")
@click.option("--format", "fmt", type=click.Choice(["json", "nft"]), default="json", show_default=True,
              help="With --dry-run: libnftables JSON (the batch connguard sends), or nft's own text syntax "
                   "(the batch loaded into a throw-away network namespace and listed there).")
@click.option("--check", is_flag=True,
              help="Have the kernel check the batch against what it holds now (nft --check); change nothing.")
def apply_cmd(state_file: str, netns: str | None, dry_run: bool, fmt: str, check: bool) -> None:
    """Compile STATE_FILE and apply it to the kernel in one atomic batch."""
    # imported here, not at the top: `apply --help` must not load the compiler (cli/main.py)
    from connguard.agent.datapath import plan as plan_datapaths
    from connguard.agent.statusfile import write_status
    from connguard.cli import changes, netns_info
    from connguard.compiler import compile_host
    from connguard.model import load_state_file
    from connguard.nft import Applier, FakeExecutor, make_executor

    where = f" in netns {netns}" if netns else ""
    try:
        state = load_state_file(state_file)
        paths = _datapaths(state, netns)
        wanted, bridges, dp_problems = plan_datapaths(state, paths)
        ruleset = compile_host(wanted, bridges=bridges)
        for problem in dp_problems if (dry_run or check) else ():  # an apply lists them with its warnings
            click.echo(f"warning: {problem}", err=True)
        for tap, bridge in sorted(bridges.items()):
            click.echo(f"note: port {tap}: bridged (master {bridge}), dispatched by its bridge", err=True)
        if dry_run:
            # Planned against an empty kernel: the whole ruleset, as it would be loaded.
            _, cmds = Applier(FakeExecutor()).plan(ruleset)
            batch = {"nftables": [c for c, _ in cmds]}
            click.echo(json.dumps(batch, indent=1) if fmt == "json" else nft_text(batch), nl=fmt == "json")
            return
        if check:
            Applier(make_executor(netns)).apply(ruleset, check=True)
            click.echo(f"ok: the kernel{where} would accept this state", err=True)
            return
        previous = _previous(agent_dir(netns) / "status.json")
        before = {k: netns_info.sysctl(netns, k) for k in netns_info.SYSCTLS}
        result = Applier(make_executor(netns)).apply(ruleset)
        warnings = list(result.warnings) + dp_problems  # kept in the status file; missing interfaces status sees live
        missing = netns_info.missing_ports(netns, sorted(ruleset.port_policy))
        for ifname in missing or ():
            i = next((i for i, p in enumerate(state.ports) if p.interface_name == ifname), "?")
            click.echo(f"warning: ports[{i}]: {netns_info.no_interface(ifname, netns)}", err=True)
        for warning in warnings:
            click.echo(f"warning: {warning}", err=True)
        for key, why in netns_info.SYSCTLS.items():
            now = netns_info.sysctl(netns, key)
            if now is not None and now != before[key]:
                click.echo(f"note: set {key} = {now}{where} (was {before[key]}): {why}", err=True)
        write_status(agent_dir(netns), state=state, ruleset=ruleset, source=str(Path(state_file).resolve()),
                     netns=netns, now=time.time(), pid=None, last_error=None, warnings=warnings,
                     last_apply={"mode": result.mode, "commands": result.commands, "seconds": round(result.seconds, 4)})
    except ConnguardError as exc:
        raise fail(exc) from None
    for line in changes.describe(previous, changes.summary(state)):
        click.echo(f"changed: {line}" if line != "unchanged" else "unchanged: the same ports, policies, rules and bans as the last apply here",
                   err=True)
    ports = len(ruleset.port_policy)
    click.echo(f"applied: {ports} protected port(s), {len(state.policies)} polic{'y' if len(state.policies) == 1 else 'ies'}, "
               f"{result.commands} commands in {result.seconds * 1000:.0f} ms" + where, err=True)


def _previous(path: Path) -> dict | None:
    """What the last apply or agent here recorded (None: nothing yet, or unreadable)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("ports"), dict) else None


def nft_text(batch: dict) -> str:
    """The batch in nft's own syntax: loaded by nft into a network namespace of its own
    (``unshare --net``: created empty for this process and gone with it; no other namespace is
    touched), then listed. The kernel, not connguard, writes the text."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(batch, fh)
    try:
        out = subprocess.run(["unshare", "--net", "sh", "-c", f'nft -j -f "$1" && nft list table {FAMILY} {TABLE}',
                              "sh", fh.name], capture_output=True, text=True, timeout=120)
    except FileNotFoundError as exc:
        raise KernelUnavailable(f"cannot render nft text: {exc.filename} not found") from None
    finally:
        os.unlink(fh.name)
    if out.returncode != 0:
        raise KernelUnavailable(f"cannot render nft text (needs root for a scratch network namespace): "
                                f"{out.stderr.strip()[:500]}")
    return out.stdout


def _datapaths(state, netns):  # noqa: ANN001, ANN202
    """Each port's datapath from its tap's master (agent/datapath.py); none when the namespace's
    links cannot be read (a dry run for another host): every port is then compiled as routed."""
    from connguard.agent.datapath import classify, masters

    try:
        found = masters(netns)
    except (OSError, ValueError, subprocess.SubprocessError):
        return {}
    return classify([p.interface_name for p in state.ports], found)
