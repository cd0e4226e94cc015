"""``connguard lab demo``: the README's main job until the all-in-one service exists.

Builds a lab, runs the standalone agent on a demonstration policy inside the lab's host
namespace, attacks the VM (connection floods from one and from many sources, an egress flood
and a brute force against a real sshd), prints what was admitted, refused and banned, and
removes everything it created, also when interrupted.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path

import click
import yaml

from connguard.cli.lab import _table

PER_REMOTE, PER_PORT, EGRESS, ATTEMPTS = 20, 60, 50, 5


def demo_state(lab) -> dict:
    vm = lab.vms[0]
    return {
        "policies": [{"name": "demo", "rules": [
            {"type": "connection_rate_limit", "direction": "ingress", "scope": "remote_ip", "max_cps": PER_REMOTE},
            {"type": "connection_rate_limit", "direction": "ingress", "scope": "port", "max_cps": PER_PORT},
            {"type": "connection_rate_limit", "direction": "egress", "scope": "port", "max_cps": EGRESS},
            {"type": "connection_limit", "direction": "any", "scope": "port", "max_connections": 2000},
            {"type": "brute_force", "profile": "ssh", "max_attempts": ATTEMPTS, "window": 60, "ban_seconds": 300},
        ]}],
        "ports": [{"interface_name": vm.tap, "fixed_ips": [vm.ipv4, vm.ipv6], "policy": "demo"}],
    }


@click.command("demo")
@click.option("--seconds", type=click.IntRange(3, 60), default=6, show_default=True,
              help="length of each flood")
def demo(seconds: int) -> None:
    """Build a lab, protect a VM, attack it for real, show the result, tear down."""
    from connguard.agent.standalone import StandaloneAgent
    from connguard.exceptions import ConnguardError
    from connguard.lab import Lab
    from connguard.lab.netns import require_root
    from connguard.nft import NftCli, observe

    try:
        require_root()
    except ConnguardError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("building the lab: a host namespace routing one VM and one client (8 extra sources) ...")
    lab = Lab.up(vms=1, clients=1, sources=8)
    rows = []
    try:
        vm, cl = lab.vms[0], lab.clients[0]
        with tempfile.TemporaryDirectory(prefix="connguard-demo-") as tmp:
            state = Path(tmp) / "state.yaml"
            state.write_text(yaml.safe_dump(demo_state(lab), sort_keys=False))
            click.echo(f"lab {lab.prefix}: VM {vm.ipv4} behind {vm.tap}; client {cl.ipv4}\n")
            click.echo("policy 'demo' (standalone agent, state file):")
            click.echo("  " + state.read_text().replace("\n", "\n  "))
            agent = StandaloneAgent(state, NftCli(lab.host), Path(tmp) / "agent", interval=0.5)
            thread = threading.Thread(target=agent.run, daemon=True)
            thread.start()
            try:
                # the agent loads a file once it has settled (1 s): attack only what it enforces
                deadline = time.monotonic() + 15
                while agent.applier.applied is None and time.monotonic() < deadline:
                    time.sleep(0.1)
                if agent.applier.applied is None:
                    raise click.ClickException(f"the agent did not apply the demo state: {agent.last_error}")
                with vm.serve(tcp=[80]), cl.serve(tcp=[8080]), vm.login_service(22) as login:
                    def flood(title, limit, run):
                        click.echo(f"{title} ({seconds} s) ...")
                        r = run()
                        measured = r.admitted_rate(skip=1)
                        rows.append([title, f"{r.offered_rate:.0f}/s", f"{limit}/s", f"{measured:.1f}/s",
                                     f"{measured / limit:.2f}", r.admitted, r.attempted - r.admitted])

                    flood("flood, one source", PER_REMOTE,
                          lambda: cl.flood(vm, 80, rate=5 * PER_REMOTE, duration=seconds))
                    flood("flood, 8 sources", PER_PORT,
                          lambda: cl.flood(vm, 80, rate=5 * PER_PORT, duration=seconds, sources=8))
                    flood("egress flood from the VM", EGRESS,
                          lambda: vm.flood(cl, 8080, rate=5 * EGRESS, duration=seconds))
                    click.echo(f"brute force against {login.kind} on port 22 ...")
                    bf = cl.bruteforce(vm, 22, attempts=ATTEMPTS + 3, timeout=1.0, source=cl.extra_ipv4[0])
            finally:
                agent.stop()
                thread.join(10)
            obs = observe(NftCli(lab.host))
    finally:
        click.echo(f"removing lab {lab.prefix} ...")
        lab.down()

    click.echo("\nNew connections admitted, measured after the first second (the burst):")
    click.echo(_table(["attack", "offered", "configured", "admitted", "ratio", "admitted (all)", "not admitted"], rows))
    click.echo(f"\nBrute force, {ATTEMPTS} attempts allowed per 60 s:")
    click.echo(_table(["attempt", "outcome", "banner"],
                      [[a.index + 1, a.outcome, (a.banner or "")[:40]] for a in bf.attempts]))
    click.echo("\nBans in the kernel:")
    click.echo(_table(["remote", "port", "expires in"],
                      [[b.ip_address, b.interface_name or "(all)", f"{b.expires} s"] for b in obs.bans]) if obs.bans
               else "  none")
