"""The namespace topology: one routing "host" namespace, VMs behind tap-named veths, clients.

::

    cl<j> eth0 ──── ext<j>  [<prefix>-host]  tapvm<i> ──── eth0 vm<i>
    10.88.<j>.2/24          routes, forwards           10.77.<i>.2/24
    fd88:0:<j>::2/64                                   fd77:0:<i>::2/64

Client j also owns ``sources`` extra IPv4 addresses 10.88.<j>.10... and as many extra IPv6
addresses, each in its own /64 (fd88:0:<j>:<k>::2, k >= 1; connguard accounts IPv6 per /64);
the host routes fd88:0:<j>::/48 back to the client. Extra addresses are never picked as default
source (IPv4 secondaries; IPv6 with preferred_lft 0), only when a tool binds to them.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from typing import Any

from connguard.exceptions import LabError
from connguard.lab import netns as nsx
from connguard.lab.nodes import NodeMixin

STATE_DIR = "/run/connguard/lab"
MAX_VMS = 200
MAX_CLIENTS = 200
MAX_SOURCES = 240


@dataclass
class VM(NodeMixin):
    index: int
    netns: str
    tap: str
    ipv4: str
    ipv6: str
    gateway4: str
    gateway6: str
    lab: Lab | None = field(default=None, repr=False, compare=False)

    def login_service(self, port: int = 22, *, force_fallback: bool = False):
        """Context manager: a real sshd (or the fallback login server) listening in this VM."""
        from connguard.lab.login import LoginService

        return LoginService(self.netns, port, force_fallback=force_fallback)


@dataclass
class Client(NodeMixin):
    index: int
    netns: str
    ext: str
    ipv4: str
    ipv6: str
    gateway4: str
    gateway6: str
    extra_ipv4: list[str] = field(default_factory=list)
    extra_ipv6: list[str] = field(default_factory=list)
    lab: Lab | None = field(default=None, repr=False, compare=False)


def _node_dict(node: VM | Client) -> dict[str, Any]:
    return {k: v for k, v in node.__dict__.items() if k != "lab"}


def _mac(kind: int, index: int, side: int) -> str:
    """Deterministic, locally administered MAC: 02:<kind>:<index hi>:<index lo>:00:<side>."""
    return f"02:{kind:02x}:{index >> 8:02x}:{index & 0xff:02x}:00:{side:02x}"


def _neigh(addresses: list[str], mac: str, dev: str) -> list[str]:
    # Permanent neighbour entries on every lab link: without them the first forwarded IPv6
    # handshake lost its SYN-ACK during neighbour discovery and took one SYN retransmit (1 s),
    # which would read as a "timeout" in floods.
    return [f"neigh replace {a} lladdr {mac} dev {dev} nud permanent" for a in addresses]


def new_prefix() -> str:
    return "cglab" + secrets.token_hex(3)


class Lab:
    """A lab topology. Build with :meth:`up`, find again with :meth:`load`, remove with :meth:`down`."""

    def __init__(self, prefix: str, vms: list[VM], clients: list[Client], sources: int = 0):
        self.prefix = prefix
        self.host = f"{prefix}-host"
        self.vms = vms
        self.clients = clients
        self.sources = sources
        for node in (*vms, *clients):
            node.lab = self

    # ---------------------------------------------------------------- build / remove
    @classmethod
    def up(cls, vms: int = 2, clients: int = 2, sources: int = 32, prefix: str | None = None) -> Lab:
        nsx.require_root()
        nsx.require_tool("ip")
        if not (1 <= vms <= MAX_VMS):
            raise LabError(f"vms must be between 1 and {MAX_VMS}")
        if not (0 <= clients <= MAX_CLIENTS):
            raise LabError(f"clients must be between 0 and {MAX_CLIENTS}")
        if not (0 <= sources <= MAX_SOURCES):
            raise LabError(f"sources must be between 0 and {MAX_SOURCES}")
        prefix = prefix or new_prefix()
        if not nsx.LAB_NAME_RE.match(prefix):
            raise LabError(f"bad lab prefix {prefix!r}: expected 'cglab' and 6 hex digits")
        existing = nsx.list_netns()
        if any(n.startswith(prefix + "-") for n in existing) or os.path.exists(cls._path(prefix)):
            raise LabError(f"lab {prefix} already exists")

        vm_objs = [VM(i, f"{prefix}-vm{i}", f"tapvm{i}", f"10.77.{i}.2", f"fd77:0:{i}::2",
                      f"10.77.{i}.1", f"fd77:0:{i}::1") for i in range(vms)]
        cl_objs = [Client(j, f"{prefix}-cl{j}", f"ext{j}", f"10.88.{j}.2", f"fd88:0:{j}::2",
                          f"10.88.{j}.1", f"fd88:0:{j}::1",
                          [f"10.88.{j}.{10 + k}" for k in range(sources)],
                          [f"fd88:0:{j}:{k + 1:x}::2" for k in range(sources)])
                   for j in range(clients)]
        lab = cls(prefix, vm_objs, cl_objs, sources)
        try:
            lab._build()
            lab._save()
        except BaseException:
            lab.down()
            raise
        return lab

    def _build(self) -> None:
        # IPv6 addresses come up without duplicate address detection (nodad and accept_dad=0,
        # also for link-local addresses, so neighbour discovery works at once).
        base = {"net.ipv6.conf.all.accept_dad": "0", "net.ipv6.conf.default.accept_dad": "0",
                "net.ipv6.conf.all.disable_ipv6": "0", "net.ipv6.conf.default.disable_ipv6": "0"}
        host_settings = {**base, "net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1",
                         "net.ipv4.conf.all.rp_filter": "0", "net.ipv4.conf.default.rp_filter": "0"}
        leaf_settings = {**base, "net.ipv4.conf.all.rp_filter": "0",
                         "net.ipv4.conf.default.rp_filter": "0",
                         "net.ipv4.tcp_tw_reuse": "1"}
        nsx.add_netns(self.host)
        nsx.sysctl(self.host, host_settings)
        host_cmds = ["link set lo up"]
        for node in (*self.vms, *self.clients):
            nsx.add_netns(node.netns)
            nsx.sysctl(node.netns, leaf_settings)
        for vm in self.vms:
            hmac, vmac = _mac(0x77, vm.index, 1), _mac(0x77, vm.index, 2)
            nsx.run(["ip", "link", "add", vm.tap, "netns", self.host, "address", hmac,
                     "type", "veth", "peer", "name", "eth0", "netns", vm.netns, "address", vmac])
            host_cmds += [f"addr add {vm.gateway4}/24 dev {vm.tap}",
                          f"addr add {vm.gateway6}/64 dev {vm.tap} nodad",
                          f"link set {vm.tap} up",
                          *_neigh([vm.ipv4, vm.ipv6], vmac, vm.tap)]
            nsx.ip_batch(vm.netns, [
                "link set lo up",
                f"addr add {vm.ipv4}/24 dev eth0",
                f"addr add {vm.ipv6}/64 dev eth0 nodad",
                "link set eth0 up",
                *_neigh([vm.gateway4, vm.gateway6], hmac, "eth0"),
                f"route add default via {vm.gateway4}",
                f"route add default via {vm.gateway6}",
            ])
        for cl in self.clients:
            hmac, cmac = _mac(0x88, cl.index, 1), _mac(0x88, cl.index, 2)
            nsx.run(["ip", "link", "add", cl.ext, "netns", self.host, "address", hmac,
                     "type", "veth", "peer", "name", "eth0", "netns", cl.netns, "address", cmac])
            host_cmds += [f"addr add {cl.gateway4}/24 dev {cl.ext}",
                          f"addr add {cl.gateway6}/64 dev {cl.ext} nodad",
                          f"link set {cl.ext} up",
                          *_neigh([cl.ipv4, cl.ipv6], cmac, cl.ext),
                          f"route add fd88:0:{cl.index}::/48 via {cl.ipv6} dev {cl.ext}"]
            cmds = ["link set lo up",
                    f"addr add {cl.ipv4}/24 dev eth0",
                    f"addr add {cl.ipv6}/64 dev eth0 nodad"]
            cmds += [f"addr add {a}/24 dev eth0" for a in cl.extra_ipv4]
            cmds += [f"addr add {a}/128 dev eth0 nodad preferred_lft 0" for a in cl.extra_ipv6]
            cmds += ["link set eth0 up",
                     *_neigh([cl.gateway4, cl.gateway6], hmac, "eth0"),
                     f"route add default via {cl.gateway4}",
                     f"route add default via {cl.gateway6}"]
            nsx.ip_batch(cl.netns, cmds)
        nsx.ip_batch(self.host, host_cmds)

    def down(self) -> None:
        """Remove every namespace of this lab and its state file. Safe to call twice."""
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
        return cls(d["prefix"], [VM(**v) for v in d["vms"]], [Client(**c) for c in d["clients"]],
                   d.get("sources", 0))

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
    def exec(self, netns: str, argv: list[str], **kw: Any):
        """``ip netns exec NETNS argv...`` (subprocess.run; keyword arguments are passed on)."""
        import subprocess

        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(nsx.ns_argv(netns, argv), **kw)

    def conntrack_count(self, netns: str | None = None) -> int:
        """Number of conntrack entries in ``netns`` (default: the host namespace)."""
        nsx.require_tool("conntrack")
        proc = nsx.run(nsx.ns_argv(netns or self.host, ["conntrack", "-C"]))
        return int(proc.stdout.strip() or 0)

    def conntrack_flush(self, netns: str | None = None) -> None:
        nsx.run(nsx.ns_argv(netns or self.host, ["conntrack", "-F"]), check=False)

    def namespaces(self) -> list[str]:
        return [self.host, *(v.netns for v in self.vms), *(c.netns for c in self.clients)]

    def __repr__(self) -> str:
        return f"Lab({self.prefix!r}, vms={len(self.vms)}, clients={len(self.clients)})"


def remove(prefix: str) -> list[str]:
    """Delete every namespace named ``<prefix>-*`` and the lab's state file; return the names."""
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
    """Delete every ``cglab*`` namespace and lab state file (``connguard lab down --all``)."""
    removed = []
    for name in nsx.list_netns():
        if name.startswith("cglab"):
            nsx.delete_netns(name)
            removed.append(name)
    if os.path.isdir(STATE_DIR):
        for name in os.listdir(STATE_DIR):
            if name.startswith("cglab"):
                try:
                    os.unlink(os.path.join(STATE_DIR, name))
                except FileNotFoundError:
                    pass
    return removed
