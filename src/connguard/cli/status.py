"""``connguard status [--netns NS]``: what this host enforces, with counters and bans.

Bounded whatever an attacker has filled: counters, the dispatch map and the per-port hit sets
are read over netlink (their size is the number of ports), the ban and offender sets only up
to ``SHOWN`` elements each unless ``--all`` asks for every one (a full ban set is 262,144
elements: seconds to read). The agent's ban book gives the total it tracks."""

from __future__ import annotations

import json
import time

import click

from connguard.cli.common import agent_dir, fail, netns_option
from connguard.exceptions import ConnguardError
from connguard.nft import NftCli, observe

SHOWN = 1000  # ban and offender elements read per set by default


def _fmt_seconds(value) -> str:
    if value is None:
        return "-"
    value = int(value)
    return f"{value // 3600}h{value % 3600 // 60:02d}m{value % 60:02d}s" if value >= 3600 else f"{value // 60}m{value % 60:02d}s"


def _summary(rule: dict) -> str:
    skip = {"type", "protocol", "ethertype", "port_range_min", "port_range_max", "remote_ip_prefix"}
    match = [f"{rule['protocol']}" if rule.get("protocol") else "",
             f"port {rule['port_range_min']}-{rule['port_range_max']}" if rule.get("port_range_min") else "",
             f"from {rule['remote_ip_prefix']}" if rule.get("remote_ip_prefix") else ""]
    params = " ".join(f"{k}={v}" for k, v in rule.items() if k not in skip)
    return f"{rule['type']} {params} {' '.join(m for m in match if m)}".strip()


@click.command("status")
@netns_option
@click.option("-f", "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--all", "read_all", is_flag=True,
              help=f"Read every ban and offender from the kernel (default: the first {SHOWN} of each set).")
def status_cmd(netns: str | None, fmt: str, read_all: bool) -> None:
    """Show protected ports, their rules with hit counters, offenders and active bans."""
    try:
        obs = observe(NftCli(netns), limit=None if read_all else SHOWN)
    except ConnguardError as exc:
        raise fail(exc) from None
    agent = _json(agent_dir(netns) / "status.json")
    book = _json(agent_dir(netns) / "bans.json")
    if not isinstance(agent, dict):
        obs.problems.append("status.json is not an object")
        agent = {}
    hit_sets: dict = agent.get("hit_sets", {})
    by_rule = {label: name for name, label in hit_sets.items()}
    policies: dict = agent.get("policies", {})
    ports = agent.get("ports") or {p: "?" for p in obs.ports}
    hits: dict[str, list] = {}
    for port, pol in ports.items():
        for i, rule in enumerate(policies.get(pol, {}).get("rules", [])):
            hset = by_rule.get(f"policy {pol} rule {i} {rule.get('type')}")
            hits.setdefault(port, []).append({"rule": _summary(rule) if "type" in rule else str(rule), "index": i,
                                              "packets": obs.hits.get((hset, port), 0)})
        if obs.present and obs.ports.get(port) is None:
            obs.problems.append(f"port {port} is not in the kernel's dispatch map: unprotected")
    data = {
        "enforcing": obs.present,
        "agent": {k: agent.get(k) for k in ("pid", "state_file", "updated_at", "last_apply", "last_error")} if agent else None,
        "ports": [{"interface_name": p, "policy": pol, "hits": hits.get(p, [])} for p, pol in sorted(ports.items())],
        "counters": obs.counters,
        "bans": [{"ip_address": b.ip_address, "interface_name": b.interface_name, "expires_in": b.expires,
                  "timeout": b.timeout} for b in obs.bans],
        "offenders": [{"interface_name": p, "remote": r} for p, r in obs.offenders],
        # sets of which only the first elements were read (--all reads them whole)
        "truncated": obs.truncated,
        "ban_book": {"bans": len(book.get("bans", []))} if isinstance(book, dict) and book else None,
        "problems": obs.problems,
    }
    if fmt == "json":
        click.echo(json.dumps(data, indent=1))
        return
    if not obs.present:
        click.echo(f"connguard enforces nothing{' in netns ' + netns if netns else ''} (no table inet connguard)")
        return
    if agent:
        age = time.time() - (agent.get("updated_at") or 0)
        who = f"agent pid {agent['pid']}" if agent.get("pid") else "connguard apply"
        click.echo(f"{who}: state {agent.get('state_file')} (applied/checked {age:.0f}s ago)")
        if agent.get("last_error"):
            click.echo(f"  last error: {agent['last_error']}")
    click.echo(f"\nPORTS ({len(data['ports'])})")
    for p in data["ports"]:
        mode = policies.get(p["policy"], {}).get("enforcement", "")
        click.echo(f"  {p['interface_name']:<16} policy {p['policy']} ({mode or '?'})")
        for h in p["hits"]:
            click.echo(f"      {h['packets']:>10} hits  {h['rule']}")
    click.echo(f"\nCOUNTERS  banned packets {obs.counters.get('banned', 0)}, "
               f"limiter set full {obs.counters.get('set_full', 0)}")
    if obs.problems:
        click.echo(f"\nPROBLEMS ({len(obs.problems)}: what the kernel holds that connguard did not write or cannot read)")
        for problem in obs.problems:
            click.echo(f"  {problem}")
    more = " shown; more in the kernel (--all)" if any(n.startswith(("ban", "hostban")) for n in obs.truncated) else ""
    tracked = f", {data['ban_book']['bans']} in the agent's ban book" if data["ban_book"] else ""
    click.echo(f"\nBANS ({len(obs.bans)}{more}{tracked})")
    for b in data["bans"]:
        click.echo(f"  {b['ip_address']:<40} {b['interface_name'] or '(all ports)':<16} expires in {_fmt_seconds(b['expires_in'])}")
    if obs.offenders:
        click.echo(f"\nOFFENDERS (monitor mode, {len(obs.offenders)})")
        for o in data["offenders"]:
            click.echo(f"  {o['remote']:<40} {o['interface_name']}")


def _json(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
