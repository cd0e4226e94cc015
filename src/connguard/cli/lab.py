"""``connguard lab``: build namespace topologies and run real attacks against them."""

from __future__ import annotations

import json
import math
import os
import signal
import threading
from typing import Any

import click

from connguard.exceptions import LabError

ATTACKS = ("flood", "flood-many", "bruteforce", "egress-flood", "syn-flood")
DEFAULT_PORTS = {"flood": 80, "flood-many": 80, "egress-flood": 80, "bruteforce": 22,
                 "syn-flood": 80}
FLOOD_RATE = 200.0      # new connections/s of the flood kinds when --rate is not given
BRUTEFORCE_RATE = 5.0   # attempts/s


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    from connguard.cli.output import table

    return table(headers, rows)


def _lab_rows(lab: Any) -> list[list[Any]]:
    def taps(vms: list[Any]) -> str:
        return ", ".join(v.tap for v in vms)

    exts = ", ".join(c.ext for c in lab.clients)
    if lab.edge is None:
        rows = [["host", lab.host, taps(lab.vms) + ("; " if lab.clients else "") + exts, "", ""]]
    else:
        rows = [["edge", lab.edge, ", ".join(h.edge_if for h in lab.hosts)
                 + ("; " if lab.clients else "") + exts, "", ""]]
        rows += [[h.name, h.netns, f"{h.uplink}; {taps(h.vms)}", h.ipv4, h.ipv6] for h in lab.hosts]
    where = (lambda v: "") if lab.edge is None else (lambda v: f" ({lab.hosts[v.host].name})")
    rows += [[f"vm{v.index}{where(v)}", v.netns, v.tap, v.ipv4, v.ipv6] for v in lab.vms]
    for c in lab.clients:
        extra = f" (+{len(c.extra_ipv4)} sources)" if c.extra_ipv4 else ""
        rows.append([f"client{c.index}", c.netns, c.ext, c.ipv4 + extra, c.ipv6])
    return rows


def _print_lab(lab: Any, fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps(lab.to_dict(), indent=2))
        return
    click.echo(lab.prefix)
    where = "interface (host ns)" if lab.edge is None else "interfaces (host or edge ns)"
    click.echo(_table(["node", "netns", where, "ipv4", "ipv6"], _lab_rows(lab)))
    for rec in lab.processes():
        click.echo(f"{rec['name']}: pid {rec['pid']} in {rec['netns'] or 'the caller namespace'}"
                   + (f", log {rec['log']}" if rec.get("log") else ""))


def _fail(exc: Exception) -> click.ClickException:
    return click.ClickException(str(exc))


@click.group("lab")
@click.pass_context
def lab(ctx: click.Context) -> None:
    """Network-namespace lab: hosts with VMs, clients, real traffic."""
    if threading.current_thread() is threading.main_thread():  # signal handlers live there only
        previous = signal.signal(signal.SIGTERM, _terminated)
        ctx.call_on_close(lambda: signal.signal(signal.SIGTERM, previous))


def _terminated(signum: int, frame: Any) -> None:
    """SIGTERM ends a lab command as Ctrl-C does: the exception unwinds through the code that
    built something (Lab.up's ``except BaseException``, demo's ``finally``), which removes it;
    the default action would kill the process there and leave the namespaces behind."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the cleanup short
    click.echo("terminated (SIGTERM): cleaning up", err=True)
    raise SystemExit(128 + signum)


@lab.command("up")
@click.option("--hosts", type=click.IntRange(1, 16), default=1, show_default=True,
              help="host namespaces; 2 or more hang off a shared client-side edge router")
@click.option("--vms", type=click.IntRange(1, 200), default=2, show_default=True,
              help="VMs per host (at most 200 in the whole lab)")
@click.option("--clients", type=click.IntRange(0, 200), default=2, show_default=True,
              help="external client namespaces")
@click.option("--sources", type=click.IntRange(0, 240), default=32, show_default=True,
              help="extra source addresses per client (IPv4, and IPv6 in distinct /64s)")
@click.option("--agent", "agent_cmd", metavar="CMD", default=None,
              help="start CMD for every host, e.g. 'connguard agent --state-file /tmp/{host}.yaml'; "
                   "{host} (host<k>), {index}, {netns} and {prefix} are replaced; output goes to a "
                   "log beside the lab's state file; 'lab down' ends it")
@click.option("--agent-outside", is_flag=True,
              help="run --agent CMD in this namespace instead of the host's (give it --netns {netns}; "
                   "for an agent that talks to a server on this machine's loopback)")
@click.option("--datapath", type=click.Choice(["routed", "bridged", "hybrid"]), default="routed", show_default=True,
              help="how hosts plug VMs in: routed taps, taps in one shared bridge, or a qbr bridge per tap "
                   "joined by a qvb/qvo veth pair to a shared bridge standing in for br-int")
@click.option("--prefix", default=None, help="cglab + 6 hex digits (default: random)")
@click.option("-f", "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="Output format.")
def up_cmd(hosts: int, vms: int, clients: int, sources: int, agent_cmd: str | None,
           agent_outside: bool, prefix: str | None, fmt: str, **how: str) -> None:
    """Build a lab and print its namespaces, interfaces and addresses."""
    datapath = how["datapath"]
    from connguard.lab import Lab

    if agent_outside and not agent_cmd:
        raise click.UsageError("--agent-outside needs --agent CMD")
    argv = _agent_argv(agent_cmd) if agent_cmd else None
    try:
        the_lab = Lab.up(vms=vms, clients=clients, sources=sources, prefix=prefix, hosts=hosts,
                         datapath=datapath)
    except LabError as exc:
        raise _fail(exc) from None
    if argv:
        try:
            _start_agents(the_lab, argv, agent_outside)
        except BaseException as exc:
            the_lab.down()  # nothing half-built: no lab without its agents
            if isinstance(exc, LabError):
                raise _fail(exc) from None
            raise
    _print_lab(the_lab, fmt)


def _agent_argv(cmd: str) -> list[str]:
    import shlex

    try:
        argv = shlex.split(cmd)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="'--agent'") from None
    if not argv:
        raise click.BadParameter("empty command", param_hint="'--agent'")
    for arg in argv:  # fail before building anything
        try:
            arg.format(host="host0", index=0, netns="x", prefix="x")
        except (KeyError, IndexError, ValueError) as exc:
            raise click.BadParameter(f"{arg!r}: unknown placeholder {exc} (use {{host}}, "
                                     "{index}, {netns}, {prefix})", param_hint="'--agent'") from None
    return argv


def _start_agents(the_lab: Any, argv: list[str], outside: bool) -> None:
    from connguard.lab.spawn import spawn_detached

    for h in the_lab.hosts:
        args = [a.format(host=h.name, index=h.index, netns=h.netns, prefix=the_lab.prefix)
                for a in argv]
        spawn_detached(the_lab.prefix, args, name=f"{h.name}-agent",
                       netns=None if outside else h.netns)


@lab.command("list")
@click.option("-f", "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="Output format.")
def list_cmd(fmt: str) -> None:
    """List the labs on this machine."""
    from connguard.lab import Lab

    labs = Lab.list()
    if fmt == "json":
        click.echo(json.dumps([lb.to_dict() for lb in labs], indent=2))
        return
    rows = [[lb.prefix, len(lb.hosts), len(lb.vms), len(lb.clients), lb.sources,
             len(lb.processes()), " ".join(h.netns for h in lb.hosts)] for lb in labs]
    click.echo(_table(["prefix", "hosts", "vms", "clients", "sources", "processes",
                       "host netns"], rows))


@lab.command("down")
@click.argument("prefix", required=False)
@click.option("--all", "all_", is_flag=True,
              help="remove every lab this user made (those with a lab file of theirs); asks first")
@click.option("-y", "--yes", is_flag=True, help="with --all: do not ask")
def down_cmd(prefix: str | None, all_: bool, yes: bool) -> None:
    """Remove a lab (every namespace it created, every process started for it), or with --all
    every lab of this user. A PREFIX that names no lab is an error."""
    from connguard.lab import netns as nsx
    from connguard.lab.spawn import reap
    from connguard.lab.topology import remove

    if bool(prefix) == all_:
        raise click.UsageError("give a lab PREFIX or --all")
    if yes and not all_:
        raise click.UsageError("--yes goes with --all")
    ended: list[dict[str, Any]] = []
    removed: list[str] = []
    try:
        nsx.require_root()
        if all_:
            mine, others, stray = _labs_for_all(nsx.list_netns())
            if others:
                click.echo(f"not removing {len(others)} lab(s) of other users: {' '.join(others)}", err=True)
            if stray:
                click.echo(f"not removing {len(stray)} cglab namespace(s) with no lab file "
                           f"('connguard lab down PREFIX' removes them): {' '.join(stray)}", err=True)
            if not mine:
                click.echo("no labs of yours to remove")
                return
            if not yes:
                click.confirm(f"remove {len(mine)} lab(s): {' '.join(mine)}?", abort=True, err=True)
            for p in mine:
                ended += reap(p)
                removed += remove(p)
        else:
            if not nsx.LAB_NAME_RE.match(prefix or ""):
                raise LabError(f"bad lab prefix {prefix!r}: expected 'cglab' and 6 hex digits")
            known = _lab_files(prefix)  # type: ignore[arg-type]
            ended = reap(prefix)  # type: ignore[arg-type]
            removed = remove(prefix)  # type: ignore[arg-type]
            if not (known or ended or removed):
                raise LabError(f"no lab {prefix}: no namespace, process or lab file of it (see 'connguard lab list')")
    except LabError as exc:
        raise _fail(exc) from None
    click.echo(f"removed {len(removed)} namespaces" + (f": {' '.join(removed)}" if removed else "")
               + (f"; ended {len(ended)} processes: " + " ".join(r["name"] for r in ended)
                  if ended else ""))


def _state_dir() -> str:
    from connguard.lab import spawn

    return spawn.STATE_DIR


def _lab_files(prefix: str) -> list[str]:
    """The lab's description (``<prefix>.json``) and process records (``<prefix>.procs``)."""
    paths = [os.path.join(_state_dir(), prefix + ext) for ext in (".json", ".procs")]
    return [p for p in paths if os.path.exists(p)]


def _labs_for_all(namespaces: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(labs of this user, labs of other users, cglab namespaces of no lab file). A lab is this
    user's when its lab file belongs to them: on a machine where several people (or test runs)
    build labs, --all must not tear down theirs."""
    from connguard.lab import netns as nsx

    owners: dict[str, int] = {}
    if os.path.isdir(_state_dir()):
        for name in os.listdir(_state_dir()):
            stem, ext = os.path.splitext(name)
            if ext in (".json", ".procs") and nsx.LAB_NAME_RE.match(stem):
                owners.setdefault(stem, os.stat(os.path.join(_state_dir(), name)).st_uid)
    mine = sorted(p for p, uid in owners.items() if uid == os.getuid())
    others = sorted(p for p, uid in owners.items() if uid != os.getuid())
    stray = sorted(n for n in namespaces if n.startswith("cglab") and n.split("-")[0] not in owners)
    return mine, others, stray


def _find_lab(prefix: str | None) -> Any:
    from connguard.lab import Lab

    if prefix:
        return Lab.load(prefix)
    labs = Lab.list()
    if len(labs) != 1:
        raise LabError("give --prefix (there are %d labs; see 'connguard lab list')" % len(labs))
    return labs[0]


def _pick(seq: list[Any], i: int, what: str) -> Any:
    if not 0 <= i < len(seq):
        raise LabError(f"no {what} {i} in this lab (it has {len(seq)})")
    return seq[i]


def _progress(t: int, s: dict[str, int]) -> None:
    click.echo(f"  {t:>3}s  admitted {s['admitted']:>7}  refused {s['refused']:>7}  "
               f"timeout {s['timeout']:>7}", err=True)


def _print_series(rows: list[dict[str, Any]], totals: dict[str, Any], fmt: str,
                  extra: dict[str, Any]) -> None:
    if fmt == "json":
        click.echo(json.dumps({**extra, **totals, "series": rows}, indent=2))
        return
    cols = ["t", "admitted", "refused", "timeout"]
    if any(r.get("error") for r in rows):
        cols.append("error")
    click.echo(_table(["second"] + cols[1:], [[r.get(c, 0) for c in cols] for r in rows]))
    click.echo("  ".join(f"{k} {v}" for k, v in {**extra, **totals}.items()))


@lab.command("attack")
@click.argument("kind", type=click.Choice(ATTACKS))
@click.option("--prefix", default=None, help="the lab (default: the only one there is)")
@click.option("--vm", "vm_index", type=int, default=0, show_default=True,
              help="Index of the target VM in the lab (as lab up lists them).")
@click.option("--client", "client_index", type=int, default=0, show_default=True,
              help="Index of the attacking client in the lab.")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="service port (default 80; 22 for bruteforce)")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=None,
              help=f"new connections/s for the flood kinds (default {FLOOD_RATE:g}), attempts/s for "
                   f"bruteforce (default {BRUTEFORCE_RATE:g}), packets/s for syn-flood (default: as fast as "
                   "possible)")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), default=5.0,
              show_default=True, help="Seconds the attack lasts.")
@click.option("--sources", type=click.IntRange(1, 240), default=None,
              help="flood-many: how many of the client's extra addresses (default all)")
@click.option("--ipv6", is_flag=True, help="attack over IPv6")
@click.option("-f", "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
              help="Output format.")
def attack_cmd(kind: str, prefix: str | None, vm_index: int, client_index: int,
               port: int | None, rate: float | None, duration: float, sources: int | None,
               ipv6: bool, fmt: str) -> None:
    """Run an attack in a lab and print admitted/refused connections per second.

    KIND: flood (one source), flood-many (many sources), bruteforce (against a login
    service), egress-flood (from a VM to a client's server), syn-flood (hping3, random
    sources).
    """
    try:
        from connguard.lab import netns as nsx

        nsx.require_root()
        the_lab = _find_lab(prefix)
        vm = _pick(the_lab.vms, vm_index, "vm")
        client = _pick(the_lab.clients, client_index, "client")
        port = port or DEFAULT_PORTS[kind]
        if kind in ("flood", "flood-many", "egress-flood"):
            _attack_flood(kind, vm, client, port, rate or FLOOD_RATE, duration, sources, ipv6, fmt)
        elif kind == "bruteforce":
            _attack_bruteforce(vm, client, port, rate, duration, ipv6, fmt)
        else:
            _attack_syn(the_lab, vm, client, port, rate, duration, ipv6, fmt)
    except LabError as exc:
        raise _fail(exc) from None


def _attack_flood(kind: str, vm: Any, client: Any, port: int, rate: float, duration: float,
                  sources: int | None, ipv6: bool, fmt: str) -> None:
    if kind == "egress-flood":
        server, attacker, target = client, vm, client
        srcs = None
    else:
        server, attacker, target = vm, client, vm
        srcs = None
        if kind == "flood-many":
            srcs = sources or len(client.extra_ipv4)
            if srcs < 1:
                raise LabError("this lab's clients have no extra source addresses "
                               "(lab up --sources N)")
    click.echo(f"{kind}: {attacker.netns} -> {target.address(ipv6)}:{port} at {rate:g}/s for "
               f"{duration:g}s" + (f" from {srcs} sources" if srcs else ""), err=True)
    with server.serve(tcp=[port]):
        r = attacker.flood(target, port, rate, duration, sources=srcs, ipv6=ipv6,
                           progress=_progress)
    skip = 1 if duration >= 3 else 0
    totals = {"attempted": r.attempted, "admitted": r.admitted, "refused": r.refused,
              "timeout": r.timeout}
    if r.error:
        totals["error"] = r.error
    extra = {"offered_rate": round(r.offered_rate, 1),
             f"admitted_rate(skip={skip}s)": round(r.admitted_rate(skip=skip), 1)}
    _print_series([s.__dict__ for s in r.series], totals, fmt, extra)


def _bf_progress(a: Any) -> None:
    click.echo(f"  {a.start:7.2f}s  attempt {a.index:>4}  {a.outcome:<9}  {a.banner[:40]}",
               err=True)


def _attack_bruteforce(vm: Any, client: Any, port: int, rate: float | None, duration: float,
                       ipv6: bool, fmt: str) -> None:
    rate = rate or BRUTEFORCE_RATE
    attempts = max(1, int(round(rate * duration)))
    with vm.login_service(port) as svc:
        click.echo(f"bruteforce: {client.netns} -> {vm.address(ipv6)}:{port} ({svc.kind}), "
                   f"{attempts} attempts at {rate:g}/s", err=True)
        r = client.bruteforce(vm, port, attempts=attempts, interval=1.0 / rate, ipv6=ipv6,
                              progress=_bf_progress)
    nsec = max(1, math.ceil(max((a.start for a in r.attempts), default=0) + 1e-9))
    rows = [{"t": t, "admitted": 0, "refused": 0, "timeout": 0, "error": 0} for t in range(nsec)]
    for a in r.attempts:
        row = rows[min(nsec - 1, int(a.start))]
        row["admitted" if a.outcome == "connected" else a.outcome] += 1
    totals = {"attempted": len(r.attempts), "admitted": r.connected, "refused": r.refused,
              "timeout": r.timeout, "banners_seen": r.banners}
    _print_series(rows, totals, fmt, {})


def _attack_syn(the_lab: Any, vm: Any, client: Any, port: int, rate: float | None,
                duration: float, ipv6: bool, fmt: str) -> None:
    if ipv6:
        raise LabError("syn-flood over IPv6 is not supported: hping3 has no IPv6")
    from connguard.lab import netns as nsx

    nsx.require_tool("hping3")
    before = _ct(the_lab, vm)
    click.echo(f"syn-flood: {client.netns} -> {vm.address(ipv6)}:{port} "
               f"{'at %g pps' % rate if rate else 'as fast as possible'} for {duration:g}s, "
               "random sources", err=True)
    with vm.serve(tcp=[port]):
        r = client.syn_flood(vm, port, duration, rate_pps=int(rate) if rate else None, ipv6=ipv6)
    after = _ct(the_lab, vm)
    out = {"packets_sent": r.sent, "pps": round(r.sent / duration) if r.sent else None,
           "host_conntrack_before": before, "host_conntrack_after": after}
    if fmt == "json":
        click.echo(json.dumps(out, indent=2))
    else:
        click.echo(_table(list(out), [list(out.values())]))


def _ct(the_lab: Any, vm: Any) -> int | str:
    try:
        return the_lab.host_of(vm).conntrack_count()
    except LabError:
        return "n/a"
