"""Does synproxy work for a port on each lab datapath? (docs/dataplane.md, "Bridged ports")

connguard does not apply synproxy to bridged ports. This probe forces it, to show why: it
compiles a syn_flood rule with synproxy for VM 0, puts the VM's address in the synproxy set
whatever its datapath, then (1) checks a real client's connection passes data, and (2) sends a
random-source SYN flood (hping3) and counts the host's conntrack entries and the SYNs that reach
the VM (a counter in the VM's own namespace). Synproxy works where the flood leaves no entry
and no SYN reaches the VM.

    PYTHONPATH=src python3 bench/bridged_synproxy_probe.py routed bridged hybrid
"""

from __future__ import annotations

import dataclasses
import json
import sys

from connguard.agent.datapath import bridges, classify, masters
from connguard.compiler import compile_host
from connguard.compiler.ruleset import Element
from connguard.lab import Lab
from connguard.lab.synflood import syn_flood
from connguard.model import parse_state
from connguard.names import SYNPROXY
from connguard.nft import Applier, NftCli

COUNT_SYNS = """table inet probe {
  chain in {
    type filter hook input priority 0;
    tcp dport 80 tcp flags & (syn|ack) == syn counter
  }
}
"""


def vm_syns(lab: Lab, vm) -> int:  # noqa: ANN001
    out = lab.exec(vm.netns, ["nft", "-j", "list", "table", "inet", "probe"], capture_output=True, text=True).stdout
    return next(i["rule"]["expr"][-1]["counter"]["packets"] for i in json.loads(out)["nftables"] if "rule" in i)


def probe(datapath: str, seconds: float = 3) -> dict:
    lab = Lab.up(vms=1, clients=1, sources=0, datapath=datapath)
    try:
        vm, cl = lab.vms[0], lab.clients[0]
        with vm.serve(tcp=[80]):
            state = parse_state({"policies": [{"name": "p", "rules": [{
                "type": "syn_flood", "port_range_min": 80, "port_range_max": 80, "max_syn_rate": 100000}]}],
                "ports": [{"interface_name": vm.tap, "fixed_ips": [vm.ipv4], "policy": "p"}]})
            rs = compile_host(state, bridges=bridges(classify([vm.tap], masters(lab.host))))
            forced = (Element({"concat": [vm.ipv4, 80]}),)
            rs = dataclasses.replace(rs, sets=tuple(dataclasses.replace(s, elements=forced) if s.name == SYNPROXY[4]
                                                    else s for s in rs.sets))
            Applier(NftCli(lab.host)).apply(rs)
            with cl.connect_and_hold(vm, 80) as conn:
                real = conn.passes_data()
            lab.exec(vm.netns, ["nft", "-f", "-"], input=COUNT_SYNS, text=True, check=True)
            lab.conntrack_flush()
            sent = syn_flood(cl.netns, vm.ipv4, 80, duration=seconds, rate_pps=2000).sent
            return {"datapath": datapath, "real_client_ok": real, "spoofed_syns_sent": sent,
                    "host_conntrack_entries": lab.conntrack_count(), "syns_reaching_vm": vm_syns(lab, vm)}
    finally:
        lab.down()


if __name__ == "__main__":
    for dp in sys.argv[1:] or ["routed", "bridged", "hybrid"]:
        print(probe(dp), flush=True)
