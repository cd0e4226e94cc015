"""Addresses and construction of a lab topology (see topology.py for the picture).

:func:`plan` is pure: it turns the counts into nodes with their names and addresses, and checks
that they fit the address plan. :func:`build` creates the namespaces and links.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from connguard.exceptions import LabError
from connguard.lab import datapath as dp
from connguard.lab import netns as nsx

from connguard.lab.machines import VM, Client, Host

if TYPE_CHECKING:
    from connguard.lab.topology import Lab

MAX_HOSTS = 16
MAX_VMS = 200       # lab-wide: VM i owns 10.77.<i>.0/24 and fd77:0:<i>::/64
MAX_CLIENTS = 200   # client j owns 10.88.<j>.0/24 and fd88:0:<j>::/48
MAX_SOURCES = 240   # 10.88.<j>.10 ... 10.88.<j>.249

# IPv6 addresses come up without duplicate address detection (nodad and accept_dad=0, also for
# link-local addresses, so neighbour discovery works at once).
_BASE = {"net.ipv6.conf.all.accept_dad": "0", "net.ipv6.conf.default.accept_dad": "0",
         "net.ipv6.conf.all.disable_ipv6": "0", "net.ipv6.conf.default.disable_ipv6": "0"}
ROUTER_SYSCTL = {**_BASE, "net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1",
                 "net.ipv4.conf.all.rp_filter": "0", "net.ipv4.conf.default.rp_filter": "0"}
LEAF_SYSCTL = {**_BASE, "net.ipv4.conf.all.rp_filter": "0", "net.ipv4.conf.default.rp_filter": "0",
               "net.ipv4.tcp_tw_reuse": "1"}


def check_counts(hosts: int, vms: int, clients: int, sources: int) -> None:
    """LabError naming the argument when the counts do not fit the address plan."""
    if not (1 <= hosts <= MAX_HOSTS):
        raise LabError(f"hosts must be between 1 and {MAX_HOSTS}, got {hosts}")
    if not (1 <= vms <= MAX_VMS):
        raise LabError(f"vms must be between 1 and {MAX_VMS}, got {vms}")
    if hosts * vms > MAX_VMS:
        raise LabError(f"hosts x vms (VMs per host) must be at most {MAX_VMS} lab-wide "
                       f"(one 10.77.<i>.0/24 per VM), got {hosts} x {vms} = {hosts * vms}")
    if not (0 <= clients <= MAX_CLIENTS):
        raise LabError(f"clients must be between 0 and {MAX_CLIENTS}, got {clients}")
    if not (0 <= sources <= MAX_SOURCES):
        raise LabError(f"sources must be between 0 and {MAX_SOURCES}, got {sources}")


def plan(prefix: str, hosts: int, vms: int, clients: int, sources: int
         ) -> tuple[list[Host], list[VM], list[Client], str | None]:
    """Nodes for a lab: (hosts, VMs, clients, edge netns or None). ``vms`` is per host."""
    check_counts(hosts, vms, clients, sources)
    if hosts == 1:
        host_objs = [Host(0, f"{prefix}-host")]
        edge = None
    else:
        host_objs = [Host(k, f"{prefix}-host{k}", "uplink", f"10.66.{k}.2", f"fd66:0:{k}::2",
                          f"10.66.{k}.1", f"fd66:0:{k}::1", f"host{k}") for k in range(hosts)]
        edge = f"{prefix}-edge"
    # VMs are numbered lab-wide (host k holds VMs k*vms ... k*vms+vms-1), and so are their taps:
    # like Neutron's tap<port-uuid> names, a tap name identifies one port in the whole cloud.
    vm_objs = [VM(i, f"{prefix}-vm{i}", f"tapvm{i}", f"10.77.{i}.2", f"fd77:0:{i}::2",
                  f"10.77.{i}.1", f"fd77:0:{i}::1", host=i // vms) for i in range(hosts * vms)]
    cl_objs = [Client(j, f"{prefix}-cl{j}", f"ext{j}", f"10.88.{j}.2", f"fd88:0:{j}::2",
                      f"10.88.{j}.1", f"fd88:0:{j}::1",
                      [f"10.88.{j}.{10 + k}" for k in range(sources)],
                      [f"fd88:0:{j}:{k + 1:x}::2" for k in range(sources)])
               for j in range(clients)]
    return host_objs, vm_objs, cl_objs, edge


def _mac(kind: int, index: int, side: int) -> str:
    """Deterministic, locally administered MAC: 02:<kind>:<index hi>:<index lo>:00:<side>."""
    return f"02:{kind:02x}:{index >> 8:02x}:{index & 0xff:02x}:00:{side:02x}"


def _neigh(addresses: list[str], mac: str, dev: str) -> list[str]:
    # Permanent neighbour entries on every lab link: without them the first forwarded IPv6
    # handshake lost its SYN-ACK during neighbour discovery and took one SYN retransmit (1 s),
    # which would read as a "timeout" in floods.
    return [f"neigh replace {a} lladdr {mac} dev {dev} nud permanent" for a in addresses]


def _bridge_mac(host: int) -> str:
    return _mac(0x76, host, 1)


def _attach_vm(router: str, vm: VM, router_cmds: list[str], datapath: str = "routed") -> None:
    hmac, vmac = _mac(0x77, vm.index, 1), _mac(0x77, vm.index, 2)
    nsx.run(["ip", "link", "add", vm.tap, "netns", router, "address", hmac,
             "type", "veth", "peer", "name", "eth0", "netns", vm.netns, "address", vmac])
    plug, gw_dev = dp.attach(datapath, vm.index, vm.tap)
    if gw_dev != vm.tap:  # the VM's gateway is the host bridge's address and MAC
        hmac = _bridge_mac(vm.host)
    router_cmds += [*plug,
                    f"addr add {vm.gateway4}/24 dev {gw_dev}",
                    f"addr add {vm.gateway6}/64 dev {gw_dev} nodad",
                    *_neigh([vm.ipv4, vm.ipv6], vmac, gw_dev)]
    nsx.ip_batch(vm.netns, [
        "link set lo up",
        f"addr add {vm.ipv4}/24 dev eth0",
        f"addr add {vm.ipv6}/64 dev eth0 nodad",
        "link set eth0 up",
        *_neigh([vm.gateway4, vm.gateway6], hmac, "eth0"),
        f"route add default via {vm.gateway4}",
        f"route add default via {vm.gateway6}",
    ])


def _attach_client(router: str, cl: Client, router_cmds: list[str]) -> None:
    hmac, cmac = _mac(0x88, cl.index, 1), _mac(0x88, cl.index, 2)
    nsx.run(["ip", "link", "add", cl.ext, "netns", router, "address", hmac,
             "type", "veth", "peer", "name", "eth0", "netns", cl.netns, "address", cmac])
    router_cmds += [f"addr add {cl.gateway4}/24 dev {cl.ext}",
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


def _attach_host(edge: str, host: Host, edge_cmds: list[str], host_cmds: list[str]) -> None:
    emac, hmac = _mac(0x66, host.index, 1), _mac(0x66, host.index, 2)
    assert host.uplink and host.edge_if and host.ipv4 and host.ipv6
    nsx.run(["ip", "link", "add", host.edge_if, "netns", edge, "address", emac,
             "type", "veth", "peer", "name", host.uplink, "netns", host.netns, "address", hmac])
    edge_cmds += [f"addr add {host.edge4}/24 dev {host.edge_if}",
                  f"addr add {host.edge6}/64 dev {host.edge_if} nodad",
                  f"link set {host.edge_if} up",
                  *_neigh([host.ipv4, host.ipv6], hmac, host.edge_if)]
    host_cmds += [f"addr add {host.ipv4}/24 dev {host.uplink}",
                  f"addr add {host.ipv6}/64 dev {host.uplink} nodad",
                  f"link set {host.uplink} up",
                  *_neigh([host.edge4, host.edge6], emac, host.uplink),  # type: ignore[list-item]
                  f"route add default via {host.edge4} dev {host.uplink}",
                  f"route add default via {host.edge6} dev {host.uplink}"]


def build(lab: Lab) -> None:
    """Create the lab's namespaces and links. On failure the caller removes the lab."""
    routers = ([lab.edge] if lab.edge else []) + [h.netns for h in lab.hosts]
    for ns in routers:
        nsx.add_netns(ns)
        nsx.sysctl(ns, ROUTER_SYSCTL)
    for node in (*lab.vms, *lab.clients):
        nsx.add_netns(node.netns)
        nsx.sysctl(node.netns, LEAF_SYSCTL)
    cmds: dict[str, list[str]] = {ns: ["link set lo up"] for ns in routers}
    for host in lab.hosts:
        if dp.shared_bridge(lab.datapath):
            nsx.ip_batch(host.netns, dp.host_setup(lab.datapath, _bridge_mac(host.index)))
    for vm in lab.vms:
        _attach_vm(lab.hosts[vm.host].netns, vm, cmds[lab.hosts[vm.host].netns], lab.datapath)
    # One host: the clients hang off it. Several: off the edge, which routes each VM's
    # subnets to the host holding the VM, so only that host forwards the VM's traffic.
    client_side = lab.edge or lab.host
    for cl in lab.clients:
        _attach_client(client_side, cl, cmds[client_side])
    if lab.edge:
        for host in lab.hosts:
            _attach_host(lab.edge, host, cmds[lab.edge], cmds[host.netns])
        for vm in lab.vms:
            cmds[lab.edge] += _edge_routes(lab, vm, "add")
    for ns in routers[::-1]:  # hosts first, then the edge (whose routes need the uplinks up)
        nsx.ip_batch(ns, cmds[ns])


def _edge_routes(lab: Lab, vm: VM, verb: str) -> list[str]:
    host = lab.hosts[vm.host]
    return [f"route {verb} 10.77.{vm.index}.0/24 via {host.ipv4} dev {host.edge_if}",
            f"route {verb} fd77:0:{vm.index}::/64 via {host.ipv6} dev {host.edge_if}"]


def new_vm(lab: Lab, host: int) -> VM:
    """The next VM of a running lab, on host ``host`` (the lowest free lab-wide index)."""
    if not 0 <= host < len(lab.hosts):
        raise LabError(f"host must be between 0 and {len(lab.hosts) - 1}, got {host}")
    used = {v.index for v in lab.vms}
    i = next(i for i in range(MAX_VMS + 1) if i not in used)
    if i >= MAX_VMS:
        raise LabError(f"the lab already has {MAX_VMS} VMs, the most its address plan holds")
    return VM(i, f"{lab.prefix}-vm{i}", f"tapvm{i}", f"10.77.{i}.2", f"fd77:0:{i}::2",
              f"10.77.{i}.1", f"fd77:0:{i}::1", host=host)


def add_vm(lab: Lab, vm: VM) -> None:
    """Create ``vm`` in a running lab: its namespace, its tap in its host, the edge's routes.
    On failure nothing of it is left."""
    router = lab.hosts[vm.host].netns
    try:
        nsx.add_netns(vm.netns)
        nsx.sysctl(vm.netns, LEAF_SYSCTL)
        cmds: list[str] = []
        _attach_vm(router, vm, cmds, lab.datapath)
        nsx.ip_batch(router, cmds)
        if lab.edge:
            nsx.ip_batch(lab.edge, _edge_routes(lab, vm, "add"))
    except BaseException:
        remove_vm(lab, vm)
        raise


def remove_vm(lab: Lab, vm: VM) -> None:
    """Delete ``vm``'s namespace (its veth pair, so its tap, goes with it) and the edge's routes."""
    nsx.delete_netns(vm.netns)
    for cmd in dp.detach(lab.datapath, vm.index):
        nsx.run(["ip", "-n", lab.hosts[vm.host].netns, *cmd.split()], check=False)
    if lab.edge:
        for cmd in _edge_routes(lab, vm, "del"):
            nsx.run(["ip", "-n", lab.edge, *cmd.split()], check=False)


def replug_hybrid(lab: Lab, vm: VM) -> None:
    """Move a routed VM's tap into the hybrid layout while the lab runs (a port changing
    datapath: the agent must notice its new master): the tap loses its addresses to the shared
    bridge ``brint`` and gets a ``qbr`` bridge and a ``qvb``/``qvo`` pair of its own."""
    host = lab.hosts[vm.host]
    bmac = _bridge_mac(vm.host)
    have = nsx.run(["ip", "-n", host.netns, "link", "show", "brint"], check=False).returncode == 0
    plug, gw_dev = dp.attach("hybrid", vm.index, vm.tap)
    vmac = _mac(0x77, vm.index, 2)
    nsx.ip_batch(host.netns, [*([] if have else dp.host_setup("hybrid", bmac)),
                              f"addr flush dev {vm.tap}", *plug,
                              f"addr add {vm.gateway4}/24 dev {gw_dev}", f"addr add {vm.gateway6}/64 dev {gw_dev} nodad",
                              *_neigh([vm.ipv4, vm.ipv6], vmac, gw_dev)])
    nsx.ip_batch(vm.netns, _neigh([vm.gateway4, vm.gateway6], bmac, "eth0"))
