"""``connguard status [--netns NS]``: what this host enforces, with counters and bans.

Bounded whatever an attacker has filled: counters, the dispatch map and the per-port hit sets
are read over netlink (their size is the number of ports), the ban and offender sets only up
to ``SHOWN`` elements each unless ``--all`` asks for every one (a full ban set is 262,144
elements: seconds to read). The agent's ban book gives the total it tracks.

The exit status makes it a health check: non-zero when nothing is enforced or when the agent
that wrote the status file is no longer running (its pid gone, or reused by another process)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import click

from connguard.cli.common import agent_dir, fail, netns_option
from connguard.exceptions import ConnguardError
from connguard.names import BAN_SETS, BANNED, BANS_PLACED, SET_FULL

SHOWN = 1000  # ban and offender elements read per set by default
EXIT_NOTHING_ENFORCED = 3
EXIT_AGENT_DEAD = 4

HELP = f"""Show what this host enforces: protected ports, their rules with hit counters,
offenders and active bans.

\b
AGENT      who applied the state: "agent pid N (running)", "agent pid N (NOT RUNNING)"
           or "connguard apply"; the state file; when the state was last applied or
           checked (ISO 8601, UTC); the error still in force, if any (a rejected
           state-file edit stays here until a good file is loaded: the last good
           state is what is enforced); warnings of the last apply.
WARNINGS   ports whose interface does not exist (yet) in the namespace: their
           rules are in place and apply as soon as it appears.
PORTS      each protected interface, its policy and the policy's mode (enforce or
           monitor); under it one line per rule of the policy:
  HITS     packets that rule refused on that port (in monitor mode: would have
           refused), counted by the kernel since the rule was first applied; a
           rule that refuses nothing (e.g. a brute-force meter below its limit)
           shows 0.
COUNTERS   banned packets: packets dropped because their source is banned;
           bans placed: bans the kernel's brute-force rules placed (the agent
           reads the ban sets when this moves, agent/banwatch.py);
           limiter set full: packets that found a per-remote limiter's set full
           and passed that limiter (fail-open, docs/dataplane.md).
PROBLEMS   what the kernel holds that connguard did not write or cannot read.
BANS       remote (address or prefix), the port it is banned from ("(all
           ports)": host-wide), when the ban ends (ISO 8601, UTC) and in how long.
OFFENDERS  remotes refused (enforce mode) or that would have been (monitor
           mode), and the port.

\b
Exit status: 0 when something is enforced and the agent that wrote the status
(if any) runs; {EXIT_NOTHING_ENFORCED} when nothing is enforced (no table inet connguard);
{EXIT_AGENT_DEAD} when the agent that wrote the status is not running; 1 on an error."""


def _fmt_seconds(value) -> str:
    if value is None:
        return "-"
    value = int(value)
    return f"{value // 3600}h{value % 3600 // 60:02d}m{value % 60:02d}s" if value >= 3600 else f"{value // 60}m{value % 60:02d}s"


def iso(epoch: float | None) -> str | None:
    """ISO 8601 in UTC, to the second (the API's form)."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(int(epoch), timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _summary(rule: dict) -> str:
    skip = {"type", "protocol", "ethertype", "port_range_min", "port_range_max", "remote_ip_prefix"}
    match = [f"{rule['protocol']}" if rule.get("protocol") else "",
             f"port {rule['port_range_min']}-{rule['port_range_max']}" if rule.get("port_range_min") else "",
             f"from {rule['remote_ip_prefix']}" if rule.get("remote_ip_prefix") else ""]
    params = " ".join(f"{k}={v}" for k, v in rule.items() if k not in skip)
    return f"{rule['type']} {params} {' '.join(m for m in match if m)}".strip()


@click.command("status", help=HELP)
@netns_option
@click.option("--port", "only", metavar="IFNAME", multiple=True,
              help="Show only this port (repeatable): its rules, its bans and host-wide bans, its offenders.")
@click.option("-f", "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="Output format.")
@click.option("--all", "read_all", is_flag=True,
              help=f"Read every ban and offender from the kernel (default: the first {SHOWN} of each set).")
def status_cmd(netns: str | None, only: tuple[str, ...], fmt: str, read_all: bool) -> None:
    from connguard.agent.statusfile import writer_running
    from connguard.nft import make_executor, observe  # here, not at the top: `status --help` stays fast

    try:
        obs = observe(make_executor(netns), limit=None if read_all else SHOWN)
    except ConnguardError as exc:
        raise fail(exc) from None
    agent = _json(agent_dir(netns) / "status.json")
    book = _json(agent_dir(netns) / "bans.json")
    if not isinstance(agent, dict):
        obs.problems.append("status.json is not an object")
        agent = {}
    now = time.time()
    running = writer_running(agent) if agent else None
    hit_sets: dict = agent.get("hit_sets", {})
    by_rule = {label: name for name, label in hit_sets.items()}
    policies: dict = agent.get("policies", {})
    ports = agent.get("ports") or {p: "?" for p in obs.ports}
    unknown = [p for p in only if p not in ports]
    if unknown:
        raise click.ClickException(f"--port {unknown[0]}: not a protected port here "
                                   f"(ports: {', '.join(sorted(ports)[:10]) or 'none'})")
    if only:
        ports = {p: pol for p, pol in ports.items() if p in only}
    hits: dict[str, list] = {}
    for port, pol in ports.items():
        for i, rule in enumerate(policies.get(pol, {}).get("rules", [])):
            hset = by_rule.get(f"policy {pol} rule {i} {rule.get('type')}")
            hits.setdefault(port, []).append({"rule": _summary(rule) if "type" in rule else str(rule), "index": i,
                                              "packets": obs.hits.get((hset, port), 0)})
        if obs.present and obs.ports.get(port) is None:
            obs.problems.append(f"port {port} is not in the kernel's dispatch map: unprotected")
    from connguard.cli import netns_info

    # a port whose interface is not there (yet) is legitimate (a VM not started) but worth saying
    warnings = [f"port {p}: {netns_info.no_interface(p, netns)}"
                for p in (netns_info.missing_ports(netns, sorted(ports)) or []) if obs.present]
    shown = (lambda ifname: ifname is None or ifname in ports) if only else (lambda ifname: True)
    bans = [b for b in obs.bans if shown(b.interface_name)]
    offenders = [(p, r) for p, r in obs.offenders if shown(p)]
    data = {
        "enforcing": obs.present,
        "agent": None if not agent else {
            "pid": agent.get("pid"), "running": running, "state_file": agent.get("state_file"),
            "updated_at": iso(agent.get("updated_at")), "last_apply": agent.get("last_apply"),
            "last_error": agent.get("last_error"), "warnings": agent.get("warnings", [])},
        "ports": [{"interface_name": p, "policy": pol, "hits": hits.get(p, []),
                   **_datapath(p, agent.get("bridged") or {})} for p, pol in sorted(ports.items())],
        "counters": obs.counters,
        "bans": [{"ip_address": b.ip_address, "interface_name": b.interface_name, "expires_in": b.expires,
                  "expires_at": iso(now + b.expires) if b.expires is not None else None,
                  "timeout": b.timeout} for b in bans],
        "offenders": [{"interface_name": p, "remote": r} for p, r in offenders],
        # sets of which only the first elements were read (--all reads them whole)
        "truncated": obs.truncated,
        "ban_book": {"bans": len(book.get("bans", []))} if isinstance(book, dict) and book else None,
        "problems": obs.problems,
        "warnings": warnings,
    }
    code = EXIT_NOTHING_ENFORCED if not obs.present else EXIT_AGENT_DEAD if running is False else 0
    if fmt == "json":
        click.echo(json.dumps(data, indent=1))
    else:
        _print(data, agent, policies, obs, netns)
    if code:
        raise SystemExit(code)


def _datapath(key: str, bridged: dict) -> dict:
    """A port's datapath: a bridged port is keyed in the kernel by its bridge, and its tap is
    what the operator knows it by."""
    if key in bridged:
        return {"datapath": "bridged", "tap": bridged[key]}
    return {"datapath": "routed", "tap": key}


def _print(data: dict, agent: dict, policies: dict, obs, netns: str | None) -> None:  # noqa: ANN001
    where = f" in netns {netns}" if netns else ""
    info = data["agent"]
    if agent:
        if info["pid"] is None:
            who = "connguard apply"
        else:
            who = f"agent pid {info['pid']} ({'running' if info['running'] else 'NOT RUNNING'})"
        age = time.time() - (agent.get("updated_at") or 0)
        click.echo(f"{who}: state {info['state_file']}, applied/checked {info['updated_at']} ({age:.0f}s ago)")
        if info["last_error"]:
            click.echo(f"  last error: {info['last_error']}")
        for w in info["warnings"]:
            click.echo(f"  warning: {w}")
        if info["running"] is False:
            click.echo(f"  the agent is not running: what it applied is still enforced, but nothing reloads the "
                       f"state, repairs drift or restores bans{where}")
    if not obs.present:
        click.echo(f"connguard enforces nothing{where} (no table inet connguard)")
        return
    for w in data["warnings"]:
        click.echo(f"warning: {w}")
    click.echo(f"\nPORTS ({len(data['ports'])})")
    for p in data["ports"]:
        mode = policies.get(p["policy"], {}).get("enforcement", "")
        via = f"  bridged: tap {p['tap']}" if p["datapath"] == "bridged" else ""
        click.echo(f"  {p['interface_name']:<16} policy {p['policy']} ({mode or '?'}){via}")
        for h in p["hits"]:
            click.echo(f"      {h['packets']:>10} hits  {h['rule']}")
    click.echo(f"\nCOUNTERS  banned packets {obs.counters.get(BANNED, 0)}, "
               f"bans placed {obs.counters.get(BANS_PLACED, 0)}, limiter set full {obs.counters.get(SET_FULL, 0)}")
    if obs.problems:
        click.echo(f"\nPROBLEMS ({len(obs.problems)}: what the kernel holds that connguard did not write or cannot read)")
        for problem in obs.problems:
            click.echo(f"  {problem}")
    more = " shown; more in the kernel (--all)" if any(n in BAN_SETS for n in obs.truncated) else ""
    tracked = f", {data['ban_book']['bans']} in the agent's ban book" if data["ban_book"] else ""
    click.echo(f"\nBANS ({len(data['bans'])}{more}{tracked})")
    for b in data["bans"]:
        ends = f"until {b['expires_at']} (in {_fmt_seconds(b['expires_in'])})" if b["expires_at"] else "no expiry"
        click.echo(f"  {b['ip_address']:<40} {b['interface_name'] or '(all ports)':<16} {ends}")
    if data["offenders"]:
        click.echo(f"\nOFFENDERS (refused, or in monitor mode would have been: {len(data['offenders'])})")
        for o in data["offenders"]:
            click.echo(f"  {o['remote']:<40} {o['interface_name']}")


def _json(path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
