"""``connguard up --lab``: a namespace lab protected through the API, attacked now and then.

:func:`register` puts the lab's VMs in the API as ports of the lab host with an example policy
(a per-source rate limit, a per-port cap, brute-force bans on the VMs' sshd). The attacks run in
a child process of their own (``python -m connguard.cli.up_lab PREFIX``, started with
``lab.spawn``): it serves the VMs (an echo server on port 80, a real sshd or the lab's login
service on 22) and floods and brute-forces them every ``--interval`` seconds. Being a recorded
lab process in its own process group, it and every helper it started end with ``lab.down()``,
whoever calls it, so Ctrl-C leaves no traffic generator behind.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

POLICY = "lab"
PER_SOURCE_CPS = 10     # new connections per second per source, towards the VM
CAP = 200               # concurrent connections per port
ATTEMPTS, WINDOW, BAN = 4, 60, 60  # brute force: 4 logins a minute, then a 60 s ban (escalating)
FLOOD_FACTOR, FLOOD_SECONDS = 3, 3  # the light flood: 3x the per-source rate for 3 s


def example_rules() -> list[tuple[str, dict[str, Any]]]:
    return [
        ("connection_rate_limit", {"direction": "ingress", "scope": "remote_ip", "max_cps": PER_SOURCE_CPS}),
        ("connection_limit", {"direction": "any", "scope": "port", "max_connections": CAP}),
        ("brute_force", {"profile": "ssh", "max_attempts": ATTEMPTS, "window": WINDOW,
                         "ban_seconds": BAN}),
    ]


def register(client: Any, lab: Any, host: str) -> list[dict[str, Any]]:
    """Create (or reuse) the example policy and register the lab's VMs as ports of ``host``;
    ports left on ``host`` by an earlier run (its lab is gone) are deleted first."""
    for old in client.get("ports", **{"binding:host_id": host})["ports"]:
        client.delete(f"ports/{old['id']}")
    found = client.get("qos/policies", name=POLICY)["policies"]
    if found:
        policy = found[0]
    else:
        policy = client.post("qos/policies", {"policy": {
            "name": POLICY, "description": "connguard up --lab: the example policy"}})["policy"]
        for kind, body in example_rules():
            client.post(f"qos/policies/{policy['id']}/{kind}_rules", {f"{kind}_rule": body})
    ports = []
    for vm in lab.vms:
        ports.append(client.post("ports", {"port": {
            "name": vm.netns.split("-", 1)[1], "binding:host_id": host, "interface_name": vm.tap,
            "fixed_ips": [{"ip_address": vm.ipv4}, {"ip_address": vm.ipv6}],
            "device_owner": "connguard:lab", "qos_policy_id": policy["id"]}})["port"])
    return ports


def unregister(client: Any, host: str) -> None:
    for old in client.get("ports", **{"binding:host_id": host})["ports"]:
        client.delete(f"ports/{old['id']}")


# ---------------------------------------------------------------- the attacker process
def _say(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def attack_loop(prefix: str, interval: float, first: float) -> None:
    import contextlib

    from connguard.lab import Lab

    lab = Lab.load(prefix)
    cl = lab.clients[0]
    web, login_vm = lab.vms[0], lab.vms[-1]
    with contextlib.ExitStack() as stack:
        for vm in lab.vms:
            stack.enter_context(vm.serve(tcp=[80]))
        svc = stack.enter_context(login_vm.login_service(22))
        _say(event="ready", login=svc.kind)
        time.sleep(first)
        n = 0
        while True:
            rate = FLOOD_FACTOR * PER_SOURCE_CPS
            r = cl.flood(web, 80, rate=rate, duration=FLOOD_SECONDS)
            _say(event="flood", source=cl.ipv4, target=f"{web.ipv4}:80", rate=rate,
                 seconds=FLOOD_SECONDS, admitted=r.admitted, refused=r.refused, dropped=r.timeout)
            # A new source each round while there are any: every round shows a first offence;
            # then sources come back and their bans escalate.
            source = cl.extra_ipv4[n % len(cl.extra_ipv4)] if cl.extra_ipv4 else None
            bf = cl.bruteforce(login_vm, 22, attempts=ATTEMPTS + 3, timeout=1.0, source=source)
            _say(event="bruteforce", source=source or cl.ipv4, target=f"{login_vm.ipv4}:22",
                 service=svc.kind, attempts=len(bf.attempts), connected=bf.connected,
                 refused=bf.refused, dropped=bf.timeout)
            n += 1
            time.sleep(interval)


def describe(line: str) -> str:
    """One readable log line for an attacker record."""
    try:
        rec = json.loads(line)
    except ValueError:
        return line
    kind = rec.get("event")
    if kind == "ready":
        return f"lab: VMs serving (port 80, {rec['login']} on 22); attacks start shortly"
    if kind == "flood":
        return (f"lab attack: flood {rec['source']} -> {rec['target']} at {rec['rate']}/s for "
                f"{rec['seconds']} s: {rec['admitted']} admitted, {rec['refused']} refused, "
                f"{rec['dropped']} dropped")
    if kind == "bruteforce":
        return (f"lab attack: {rec['attempts']} logins {rec['source']} -> {rec['target']} "
                f"({rec['service']}): {rec['connected']} connected, {rec['refused']} refused, "
                f"{rec['dropped']} dropped")
    return line


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m connguard.cli.up_lab")
    p.add_argument("prefix")
    p.add_argument("--interval", type=float, default=20.0)
    p.add_argument("--first", type=float, default=3.0)
    args = p.parse_args(argv)
    try:
        attack_loop(args.prefix, args.interval, args.first)
    except KeyboardInterrupt:
        pass
    except Exception as exc:  # noqa: BLE001 - one line for the parent's log, not a traceback
        print(f"lab attacker stopped: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
