"""The namespace topology: routing "host" namespaces, VMs behind tap-named veths, clients.

One host (``Lab.up(hosts=1)``, the default)::

    cl<j> eth0 ──── ext<j>  [<prefix>-host]  tapvm<i> ──── eth0 vm<i>
    10.88.<j>.2/24          routes, forwards           10.77.<i>.2/24
    fd88:0:<j>::2/64                                   fd77:0:<i>::2/64

Several hosts (``Lab.up(hosts=N)``, N >= 2): the clients hang off a shared "edge" router, and
each host namespace is linked to it; the edge routes every VM's subnets to the host holding it::

    cl<j> eth0 ── ext<j> [<prefix>-edge] host<k> ── uplink [<prefix>-host<k>] tapvm<i> ── vm<i>
                                  10.66.<k>.1/24  10.66.<k>.2/24
                                  fd66:0:<k>::1/64  fd66:0:<k>::2/64

So a client's connection to a VM of host k, and a VM of another host talking to it, are
forwarded by host k's namespace and no other host's: that is where host k's agent enforces.
A server for the hosts' agents runs either in the caller's namespace on loopback, the agents
then started with ``Host.spawn(..., inside=False)`` and ``--netns``, or in the edge
(``lab.spawn(argv, netns=lab.edge)``), where host k reaches it at 10.66.<k>.1 (``edge4``).

``vms`` counts VMs per host; VMs (namespace, tap, addresses) are numbered lab-wide, host k
holding VMs ``k*vms ... k*vms+vms-1``, so every tap name is unique in the lab (like Neutron's
``tap<port-uuid>``) and every address too. ``lab.host`` is host 0's namespace in both layouts.

Client j also owns ``sources`` extra IPv4 addresses 10.88.<j>.10... and as many extra IPv6
addresses, each in its own /64 (fd88:0:<j>:<k>::2, k >= 1; connguard accounts IPv6 per /64);
the router the clients hang off routes fd88:0:<j>::/48 back to the client. Extra addresses are
never picked as default source (IPv4 secondaries; IPv6 with preferred_lft 0), only when a tool
binds to them.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Sequence
from typing import Any

from connguard.exceptions import LabError
from connguard.lab import build as _build
from connguard.lab import datapath as _datapath
from connguard.lab import netns as nsx
from connguard.lab import spawn as _spawn
from connguard.lab.machines import VM, Client, Host  # noqa: F401  (re-exported)

STATE_DIR = _spawn.STATE_DIR


def _node_dict(node: VM | Client | Host) -> dict[str, Any]:
    return {k: v for k, v in node.__dict__.items() if k != "lab"}


def new_prefix() -> str:
    return "cglab" + secrets.token_hex(3)


class Lab:
    """A lab topology. Build with :meth:`up`, find again with :meth:`load`, remove with :meth:`down`."""

    def __init__(self, prefix: str, vms: list[VM], clients: list[Client], sources: int = 0,
                 hosts: list[Host] | None = None, edge: str | None = None, datapath: str = "routed"):
        _datapath.check(datapath)
        self.prefix = prefix
        self.datapath = datapath  # how hosts plug their VMs in (lab/datapath.py)
        self.hosts = hosts or [Host(0, f"{prefix}-host")]
        self.host = self.hosts[0].netns
        self.edge = edge  # the shared client-side router (labs of 2+ hosts), else None
        self.vms = vms
        self.clients = clients
        self.sources = sources
        for node in (*self.hosts, *vms, *clients):
            node.lab = self

    # ---------------------------------------------------------------- build / remove
    @classmethod
    def up(cls, vms: int = 2, clients: int = 2, sources: int = 32, prefix: str | None = None,
           hosts: int = 1, datapath: str = "routed") -> Lab:
        """Build a lab of ``hosts`` hosts with ``vms`` VMs each and ``clients`` clients, the VMs
        plugged in by ``datapath`` (routed, bridged or hybrid: lab/datapath.py)."""
        _datapath.check(datapath)
        nsx.require_root()
        nsx.require_tool("ip")
        _build.check_counts(hosts, vms, clients, sources)
        prefix = prefix or new_prefix()
        if not nsx.LAB_NAME_RE.match(prefix):
            raise LabError(f"bad lab prefix {prefix!r}: expected 'cglab' and 6 hex digits")
        existing = nsx.list_netns()
        if any(n.startswith(prefix + "-") for n in existing) or os.path.exists(cls._path(prefix)):
            raise LabError(f"lab {prefix} already exists")
        host_objs, vm_objs, cl_objs, edge = _build.plan(prefix, hosts, vms, clients, sources)
        lab = cls(prefix, vm_objs, cl_objs, sources, host_objs, edge, datapath)
        try:
            _build.build(lab)
            lab._save()
        except BaseException:
            lab.down()
            raise
        return lab

    def add_vm(self, host: int = 0) -> VM:
        """Add a VM to host ``host`` of this running lab: a new tap appears in that host's
        namespace (port discovery); it takes the lowest free lab-wide index."""
        vm = _build.new_vm(self, host)
        _build.add_vm(self, vm)
        vm.lab = self
        self.vms.append(vm)
        self._save()
        return vm

    def remove_vm(self, vm: VM) -> None:
        """Delete a VM: its namespace, and so its tap, vanish from its host (a port going away)."""
        if vm not in self.vms:
            raise LabError(f"{vm.netns} is not a VM of lab {self.prefix}")
        _build.remove_vm(self, vm)
        self.vms.remove(vm)
        self._save()

    def down(self) -> None:
        """End the lab's processes, remove every namespace of it and its state file.
        Safe to call twice."""
        remove(self.prefix)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    # ---------------------------------------------------------------- persistence
    @staticmethod
    def _path(prefix: str) -> str:
        return os.path.join(STATE_DIR, f"{prefix}.json")

    def to_dict(self) -> dict[str, Any]:
        return {"prefix": self.prefix, "host": self.host, "sources": self.sources,
                "edge": self.edge, "datapath": self.datapath, "hosts": [_node_dict(h) for h in self.hosts],
                "vms": [_node_dict(v) for v in self.vms],
                "clients": [_node_dict(c) for c in self.clients]}

    def _save(self) -> None:
        os.makedirs(STATE_DIR, exist_ok=True)
        tmp = self._path(self.prefix) + ".tmp"
        with open(tmp, "w") as fh:
            json.dump(self.to_dict(), fh, indent=2)
        os.replace(tmp, self._path(self.prefix))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Lab:
        hosts = [Host(**h) for h in d["hosts"]] if d.get("hosts") else None
        return cls(d["prefix"], [VM(**v) for v in d["vms"]], [Client(**c) for c in d["clients"]],
                   d.get("sources", 0), hosts, d.get("edge"), d.get("datapath", "routed"))

    @classmethod
    def load(cls, prefix: str) -> Lab:
        if not nsx.LAB_NAME_RE.match(prefix or ""):
            raise LabError(f"bad lab prefix {prefix!r}: expected 'cglab' and 6 hex digits")
        try:
            with open(cls._path(prefix)) as fh:
                return cls.from_dict(json.load(fh))
        except FileNotFoundError:
            raise LabError(f"no lab {prefix} (see 'connguard lab list')") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise LabError(f"lab description {cls._path(prefix)} is unreadable: {exc}") from exc

    @classmethod
    def list(cls) -> list[Lab]:
        labs = []
        if os.path.isdir(STATE_DIR):
            for name in sorted(os.listdir(STATE_DIR)):
                if name.endswith(".json") and nsx.LAB_NAME_RE.match(name[:-5]):
                    try:
                        labs.append(cls.load(name[:-5]))
                    except LabError:
                        continue
        return labs

    # ---------------------------------------------------------------- helpers
    def host_of(self, vm: VM) -> Host:
        """The host whose namespace forwards ``vm``'s traffic."""
        return self.hosts[vm.host]

    def spawn(self, argv: Sequence[str], *, name: str, netns: str | None = None,
              env: dict[str, str] | None = None) -> _spawn.LabProcess:
        """Start a process for the lab as a whole (a server), reaped like ``Host.spawn``'s:
        in ``netns`` (e.g. ``lab.edge``, where every host reaches it at its ``edge4``
        address) or, with None, in the caller's namespace."""
        if netns is not None and netns not in self.namespaces():
            raise LabError(f"{netns} is not a namespace of lab {self.prefix}")
        return _spawn.spawn(self.prefix, argv, name=name, netns=netns, env=env)

    def processes(self) -> list[dict[str, Any]]:
        """The lab's recorded processes that still run (``host.spawn``, ``lab up --agent``)."""
        return _spawn.recorded(self.prefix)

    def exec(self, netns: str, argv: list[str], **kw: Any):
        """``ip netns exec NETNS argv...`` (subprocess.run; keyword arguments are passed on)."""
        import subprocess

        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(nsx.ns_argv(netns, argv), **kw)

    def conntrack_count(self, netns: str | None = None) -> int:
        """Number of conntrack entries in ``netns`` (default: host 0's namespace)."""
        nsx.require_tool("conntrack")
        proc = nsx.run(nsx.ns_argv(netns or self.host, ["conntrack", "-C"]))
        return int(proc.stdout.strip() or 0)

    def conntrack_flush(self, netns: str | None = None) -> None:
        nsx.run(nsx.ns_argv(netns or self.host, ["conntrack", "-F"]), check=False)

    def namespaces(self) -> list[str]:
        return [*([self.edge] if self.edge else []), *(h.netns for h in self.hosts),
                *(v.netns for v in self.vms), *(c.netns for c in self.clients)]

    def __repr__(self) -> str:
        hosts = f"hosts={len(self.hosts)}, " if len(self.hosts) > 1 else ""
        return f"Lab({self.prefix!r}, {hosts}vms={len(self.vms)}, clients={len(self.clients)})"


def remove(prefix: str) -> list[str]:
    """End the lab's recorded processes, delete every namespace named ``<prefix>-*`` and the
    lab's state file; return the namespace names."""
    _spawn.reap(prefix)
    removed = []
    for name in nsx.list_netns():
        if name.startswith(prefix + "-"):
            nsx.delete_netns(name)
            removed.append(name)
    try:
        os.unlink(Lab._path(prefix))
    except FileNotFoundError:
        pass
    return removed


def remove_all() -> list[str]:
    """Delete every ``cglab*`` namespace, process and lab state file (``lab down --all``)."""
    if os.path.isdir(STATE_DIR):
        for name in os.listdir(STATE_DIR):
            if name.endswith(".procs") and nsx.LAB_NAME_RE.match(name[:-6]):
                _spawn.reap(name[:-6])
    removed = []
    for name in nsx.list_netns():
        if name.startswith("cglab"):
            nsx.delete_netns(name)
            removed.append(name)
    if os.path.isdir(STATE_DIR):
        for name in os.listdir(STATE_DIR):
            if name.startswith("cglab"):
                path = os.path.join(STATE_DIR, name)
                if os.path.isdir(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    try:
                        os.unlink(path)
                    except FileNotFoundError:
                        pass
    return removed
