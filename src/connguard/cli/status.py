"""``connguard status [--netns NS]``: what this host enforces, with counters and bans."""

from __future__ import annotations

import json
import time

import click

from connguard.cli.common import agent_dir, fail, netns_option
from connguard.exceptions import ConnguardError
from connguard.nft import NftCli, observe


def _fmt_seconds(value) -> str:
    if value is None:
        return "-"
    value = int(value)
    return f"{value // 3600}h{value % 3600 // 60:02d}m{value % 60:02d}s" if value >= 3600 else f"{value // 60}m{value % 60:02d}s"


@click.command("status")
@netns_option
@click.option("-f", "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
def status_cmd(netns: str | None, fmt: str) -> None:
    """Show protected ports, their rules with hit counters, offenders and active bans."""
    try:
        obs = observe(NftCli(netns))
    except ConnguardError as exc:
        raise fail(exc) from None
    try:
        agent = json.loads((agent_dir(netns) / "status.json").read_text())
    except (OSError, ValueError):
        agent = {}
    hit_sets: dict = agent.get("hit_sets", {})
    hits: dict[str, list] = {}
    for (hset, port), packets in sorted(obs.hits.items()):
        hits.setdefault(port, []).append({"rule": hit_sets.get(hset, hset), "packets": packets})
    ports = agent.get("ports") or {p: "?" for p in obs.ports}
    data = {
        "enforcing": obs.present,
        "agent": {k: agent.get(k) for k in ("pid", "state_file", "updated_at", "last_apply", "last_error")} if agent else None,
        "ports": [{"interface_name": p, "policy": pol, "hits": hits.get(p, [])} for p, pol in sorted(ports.items())],
        "counters": obs.counters,
        "bans": [{"ip_address": b.ip_address, "interface_name": b.interface_name, "expires_in": b.expires,
                  "timeout": b.timeout} for b in obs.bans],
        "offenders": [{"interface_name": p, "remote": r} for p, r in obs.offenders],
    }
    if fmt == "json":
        click.echo(json.dumps(data, indent=1))
        return
    if not obs.present:
        click.echo(f"connguard enforces nothing{' in netns ' + netns if netns else ''} (no table inet connguard)")
        return
    if agent:
        age = time.time() - (agent.get("updated_at") or 0)
        click.echo(f"agent pid {agent.get('pid')} state {agent.get('state_file')} (updated {age:.0f}s ago)")
        if agent.get("last_error"):
            click.echo(f"  last error: {agent['last_error']}")
    click.echo(f"\nPORTS ({len(data['ports'])})")
    for p in data["ports"]:
        click.echo(f"  {p['interface_name']:<16} policy {p['policy']}")
        for h in p["hits"]:
            click.echo(f"      {h['packets']:>10}  {h['rule']}")
    click.echo(f"\nCOUNTERS  banned packets {obs.counters.get('banned', 0)}, "
               f"limiter set full {obs.counters.get('set_full', 0)}")
    click.echo(f"\nBANS ({len(obs.bans)})")
    for b in data["bans"]:
        click.echo(f"  {b['ip_address']:<40} {b['interface_name'] or '(all ports)':<16} expires in {_fmt_seconds(b['expires_in'])}")
    if obs.offenders:
        click.echo(f"\nOFFENDERS (monitor mode, {len(obs.offenders)})")
        for o in data["offenders"]:
            click.echo(f"  {o['remote']:<40} {o['interface_name']}")
