"""How a lab host plugs its VMs in: the three layouts clouds run (docs/dataplane.md).

- ``routed`` (Calico): the tap carries the VM's gateway addresses; the host routes to it.
- ``bridged`` (one shared Linux bridge, as ML2/linuxbridge): every tap of the host is enslaved
  to ``brvm``, which carries every VM's gateway addresses.
- ``hybrid`` (ML2/OVS with the iptables-hybrid firewall): each tap sits alone in its own bridge
  ``qbrvm<i>`` (Neutron: ``qbr`` + port id[:11]) joined by a veth pair ``qvbvm<i>``/``qvovm<i>``
  to a shared bridge ``brint`` standing in for OVS's br-int, which carries the gateways.

Only the host side differs: the VM's namespace and addresses are the same in every layout.
"""

from __future__ import annotations

from connguard.exceptions import LabError

DATAPATHS = ("routed", "bridged", "hybrid")
SHARED = {"bridged": "brvm", "hybrid": "brint"}


def check(datapath: str) -> None:
    if datapath not in DATAPATHS:
        raise LabError(f"datapath must be one of {', '.join(DATAPATHS)}, got {datapath!r}")


def shared_bridge(datapath: str) -> str | None:
    """The host bridge that carries the VMs' gateway addresses (None when routed)."""
    return SHARED.get(datapath)


def port_bridge(datapath: str, index: int) -> str | None:
    """The bridge VM ``index``'s tap is enslaved to (None when routed)."""
    if datapath == "hybrid":
        return f"qbrvm{index}"
    return SHARED.get(datapath)


def host_setup(datapath: str, mac: str) -> list[str]:
    """``ip -b`` lines creating the host's shared bridge (before any VM is attached)."""
    br = shared_bridge(datapath)
    if br is None:
        return []
    return [f"link add {br} address {mac} type bridge", f"link set {br} up"]


def attach(datapath: str, index: int, tap: str) -> tuple[list[str], str]:
    """``ip -b`` lines plugging ``tap`` in (it exists, in the host namespace), and the device
    that carries VM ``index``'s gateway addresses and neighbour entries."""
    if datapath == "routed":
        return [f"link set {tap} up"], tap
    shared = SHARED[datapath]
    if datapath == "bridged":
        return [f"link set {tap} master {shared}", f"link set {tap} up"], shared
    qbr, qvb, qvo = f"qbrvm{index}", f"qvbvm{index}", f"qvovm{index}"
    return [f"link add {qbr} type bridge", f"link set {qbr} up",
            f"link set {tap} master {qbr}", f"link set {tap} up",
            f"link add {qvb} type veth peer name {qvo}",
            f"link set {qvb} master {qbr}", f"link set {qvo} master {shared}",
            f"link set {qvb} up", f"link set {qvo} up"], shared


def detach(datapath: str, index: int) -> list[str]:
    """What removing VM ``index`` leaves behind on the host (its tap goes with its namespace)."""
    if datapath != "hybrid":
        return []
    return [f"link del qvbvm{index}", f"link del qbrvm{index}"]
