"""Network-namespace lab: topologies with real traffic (see DESIGN.md, "Lab").

    with Lab.up(vms=1, clients=1) as lab:
        with lab.vms[0].serve(tcp=[80]):
            r = lab.clients[0].flood(lab.vms[0], 80, rate=200, duration=3)
            print(r.admitted_rate(skip=1))

    with Lab.up(hosts=3, vms=2, clients=1) as lab:      # 3 host namespaces behind an edge
        vm = lab.hosts[2].vms[0]                         # forwarded by host 2 only
        agent = lab.hosts[2].spawn(["connguard", "agent", "--state-file", "h2.yaml"])
        ...                                              # lab.down() ends the agent too

Layout and addresses: topology.py; processes started for a lab: spawn.py.
"""

from connguard.exceptions import LabError
from connguard.lab.nodes import EstablishedConnection, Hold, Server
from connguard.lab.results import (BruteForceAttempt, BruteForceResult, FloodResult,
                                   FloodSecond, SynFloodResult)
from connguard.lab.topology import VM, Client, Lab

__all__ = ["Lab", "LabError", "VM", "Client", "Server", "Hold", "EstablishedConnection",
           "FloodResult", "FloodSecond", "BruteForceResult", "BruteForceAttempt",
           "SynFloodResult"]
