"""The nodes of a lab: VMs, clients and hosts (topology.py draws them; build.py plans their
names and addresses and creates them). Apart from ``topology`` so that ``build`` and ``topology``
do not import each other."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from connguard.exceptions import LabError
from connguard.lab import netns as nsx
from connguard.lab import spawn as _spawn
from connguard.lab.nodes import NodeMixin

if TYPE_CHECKING:
    from connguard.lab.topology import Lab


@dataclass
class VM(NodeMixin):
    index: int
    netns: str
    tap: str
    ipv4: str
    ipv6: str
    gateway4: str
    gateway6: str
    host: int = 0  # index of the host (in ``lab.hosts``) whose namespace holds the tap
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


@dataclass
class Host:
    """A routing host namespace, the compute host of its VMs (where its agent enforces).

    In a one-host lab the uplink fields are None (the clients hang off the host itself).
    """

    index: int
    netns: str
    uplink: str | None = None   # its interface towards the edge
    ipv4: str | None = None     # its address on the uplink
    ipv6: str | None = None
    edge4: str | None = None    # the edge's address on that link (the host's default route)
    edge6: str | None = None
    edge_if: str | None = None  # the edge's interface towards this host
    lab: Lab | None = field(default=None, repr=False, compare=False)

    @property
    def name(self) -> str:
        """``host<k>``: the name to register the host under (``--host``)."""
        return f"host{self.index}"

    @property
    def vms(self) -> list[VM]:
        return [v for v in (self.lab.vms if self.lab else []) if v.host == self.index]

    def exec(self, argv: Sequence[str], **kw: Any):
        """``ip netns exec`` this host (subprocess.run; keyword arguments are passed on)."""
        import subprocess

        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(nsx.ns_argv(self.netns, argv), **kw)

    def conntrack_count(self) -> int:
        nsx.require_tool("conntrack")
        proc = nsx.run(nsx.ns_argv(self.netns, ["conntrack", "-C"]))
        return int(proc.stdout.strip() or 0)

    def conntrack_flush(self) -> None:
        nsx.run(nsx.ns_argv(self.netns, ["conntrack", "-F"]), check=False)

    def spawn(self, argv: Sequence[str], *, name: str | None = None, inside: bool = True,
              env: dict[str, str] | None = None) -> _spawn.LabProcess:
        """Start a long-running process for this host (its agent), reaped by ``lab.down()``
        and by ``connguard lab down`` (see spawn.py). ``inside``: in this host's namespace;
        False: in the caller's namespace, for a command given ``--netns`` that must reach a
        server on the caller's loopback."""
        if self.lab is None:
            raise LabError(f"{self.netns}: not part of a lab")
        return _spawn.spawn(self.lab.prefix, argv, name=name or f"{self.name}-proc",
                            netns=self.netns if inside else None, env=env)
