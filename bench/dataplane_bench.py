#!/usr/bin/env python3
"""Dataplane benchmark: what 10,000 protected ports cost on the packet path and in the applier.

    python bench/dataplane_bench.py            # full run, about 4-5 minutes
    python bench/dataplane_bench.py --quick    # about a minute, fewer and shorter rounds
    python bench/dataplane_bench.py --compare-rev main --throughput-only   # before/after, ~3 minutes

Needs root, nft, iproute2, conntrack. Everything happens inside one connguard lab
(``Lab.up(vms=1, clients=1, sources=0)``): the root namespace's ruleset and interfaces are never
touched, and the lab is removed on exit, also on failure or Ctrl-C.

1. **New-connection throughput through the lab host** (client -> host forward -> VM), closed
   loop: ``--conn-procs`` processes in the client namespace each open a TCP connection to the
   VM, wait for the handshake, and close it with an RST (SO_LINGER 0: no TIME_WAIT), as fast as
   they can, for ``--duration`` seconds after a short warm-up (connect timeout 0.25 s, so a lost
   SYN costs little; failures are counted and printed); ``--server-procs`` processes in
   the VM accept and close. With 2 cores all of it is CPU-bound, so anything the host's ruleset
   adds per connection shows up as fewer connections per second. Configurations, interleaved
   round by round (same order each round), medians reported:

   - ``none``: no ruleset in the host namespace (conntrack is not even active there);
   - ``conntrack``: one table whose forward chain is ``ct state established,related accept``
     (conntrack on, no per-port work): separates what conntrack costs from what rules cost;
   - ``connguard``: ``compile_host`` of 10,000 ports (the real tap in the middle of the sort
     order), applied with ``Applier``; limits so high that nothing is refused (checked after);
   - ``linear``: the iptables way: ``ct state established,related accept``, then one
     ``oifname "tapX" jump pN`` rule per port (10,000), each port chain holding a counter and
     two ``ct state new limit rate over ... drop`` rules. The real tap is rule 5,001.

   - ``cg-REV`` (``--compare-rev REV``, repeatable): the same 10,000-port state compiled and
     applied by the compiler and applier of git revision REV (its ``src`` exported with
     ``git archive`` into a temporary directory and run in a subprocess whose PYTHONPATH points
     there), next to ``connguard`` from the working tree, in the same rounds: the report adds
     connguard-before / conntrack, connguard-after / conntrack and after / before, per round.
     Every connguard configuration is applied once by its own Applier while its batches are
     recorded, and replayed verbatim (with the sysctls it set) before each of its runs, so a
     revision's applier may differ from the working tree's.

   The lab host's ``nf_conntrack_tcp_timeout_close`` is set to 1 s (reset connections would
   otherwise stay 10 s and fill the conntrack table at these rates) and conntrack is flushed
   before every run.
2. **Compile + apply of 10,000 ports**: full sync on a fresh table (compile and apply timed
   separately), full sync again on a table that holds 10,000 ports and bans (a restart: new
   Applier; the bans are counted before and after), then deltas on the same Applier: one port
   added (and removed again) and one port's policy changed (and back).
3. **Loading 100,000 bans in one batch** into ``ban4`` (``ifname . address``, on real port
   names): one ``add_ban`` command per ban vs. one command whose ``elem`` list holds all of them.

Nothing here asserts a time: the script prints raw figures and ratios measured side by side.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from dataplane_configs import (CAP_FORMS, HIGH_CONNECTIONS, PERF_FREQ, PERF_SYMBOLS, cap_form_ruleset,
                               compile_and_record, export_rev, ns_run, perf_costs, run_compile, tree_description)
from dataplane_traffic import run_connector, run_holder, run_keeper, run_server

T0 = time.monotonic()
CONNGUARD_TABLE = ("inet", "connguard")
LINEAR_TABLE = "cglinear"
CT_TABLE = "cgctonly"
HIGH_RATE = 1_000_000          # model maximum: nothing is refused at the rates reached here
HOLD_PORT = 81                 # --hold's idle connections (same VM, same tap: the same per-port count)


def progress(msg: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {msg}", flush=True)


def median(xs):
    return statistics.median(xs) if xs else float("nan")


# ============================================================================ lab-side helpers

def cpu_times() -> tuple[int, int]:
    with open("/proc/stat") as fh:
        vals = [int(x) for x in fh.readline().split()[1:]]
    idle = vals[3] + vals[4]
    return idle, sum(vals)


def port_names(n: int, real: str) -> list[str]:
    """n interface names: fake ones on both sides of ``real`` in sort order ("tapf..." < "tapvm0"
    < "tapx..."), so that ``real`` sits in the middle of every sorted structure."""
    before = (n - 1) // 2
    after = n - 1 - before
    names = [f"tapf{i:05d}" for i in range(before)] + [real] + [f"tapx{i:05d}" for i in range(after)]
    assert sorted(names) == names and len(set(names)) == n
    return names


WEB = {"name": "web", "rules": [
    {"type": "connection_rate_limit", "direction": "ingress", "scope": "remote_ip", "max_cps": HIGH_RATE},
    {"type": "connection_rate_limit", "direction": "ingress", "scope": "port", "max_cps": HIGH_RATE},
    {"type": "connection_rate_limit", "direction": "egress", "scope": "port", "max_cps": HIGH_RATE},
    {"type": "connection_limit", "direction": "any", "scope": "port", "max_connections": HIGH_CONNECTIONS},
    {"type": "brute_force", "profile": "ssh"}]}
DB = {"name": "db", "rules": [
    {"type": "connection_rate_limit", "direction": "ingress", "scope": "remote_ip", "max_cps": 200},
    {"type": "connection_limit", "direction": "ingress", "scope": "port", "max_connections": 2000},
    {"type": "brute_force", "profile": "ssh"}]}


def state_dict(names: list[str], real: str, real_ips: list[str], overrides: dict[str, str] | None = None,
               extra: list[str] = (), web: dict = WEB) -> dict:
    """Every 10th fake port uses policy db, the rest (and the real tap) web."""
    overrides = overrides or {}
    ports = []
    for i, n in enumerate(list(names) + list(extra)):
        ips = real_ips if n == real else [str(ipaddress.IPv4Address(0xAC100000 + i))]  # 172.16/12
        pol = overrides.get(n, "db" if (n != real and i % 10 == 9) else "web")
        ports.append({"interface_name": n, "fixed_ips": ips, "policy": pol})
    return {"policies": [web, DB], "ports": ports, "default_policy": None}


def linear_ruleset(names: list[str]) -> str:
    """The iptables-style reference, as nft text (only fixed words and our own names)."""
    lines = [f"table inet {LINEAR_TABLE} {{"]
    for i in range(len(names)):
        lines.append(f"  chain p{i} {{\n    counter\n"
                     f"    ct state new limit rate over {HIGH_RATE}/second burst {HIGH_RATE} packets drop\n"
                     f"    ct state new limit rate over {HIGH_RATE}/second burst {HIGH_RATE} packets drop\n  }}")
    lines.append("  chain forward {\n    type filter hook forward priority -10; policy accept;\n"
                 "    ct state established,related accept")
    lines += [f'    oifname "{n}" jump p{i}' for i, n in enumerate(names)]
    lines.append("  }\n}")
    return "\n".join(lines) + "\n"


CT_ONLY = (f"table inet {CT_TABLE} {{\n  chain forward {{\n    type filter hook forward priority -10; "
           "policy accept;\n    ct state established,related accept\n  }\n}\n")


class TimedExecutor:
    """Wraps NftCli and records how long each nft call took (json.dumps + nft process + kernel)."""

    def __init__(self, inner):
        self.inner = inner
        self.netns = inner.netns
        self.calls: list[tuple[str, int, float]] = []

    def batch(self, payload: dict, *, check: bool = False) -> None:
        t = time.perf_counter()
        self.inner.batch(payload, check=check)
        self.calls.append(("batch", len(payload["nftables"]), time.perf_counter() - t))

    def query(self, *args: str, terse: bool = False) -> dict:
        t = time.perf_counter()
        try:
            return self.inner.query(*args, terse=terse)
        finally:
            self.calls.append(("query", 0, time.perf_counter() - t))

    def sysctl(self, key: str, value: str) -> None:
        self.inner.sysctl(key, value)

    def take(self, kind: str) -> float:
        s = sum(t for k, _, t in self.calls if k == kind)
        return s

    def reset(self) -> None:
        self.calls.clear()


# ============================================================================ the benchmark

class Bench:
    def __init__(self, args):
        self.a = args
        self.results: dict = {}
        self.lab = None

    # ------------------------------------------------------------------ table helpers
    def nft(self, *argv: str, stdin: str | None = None, check: bool = True) -> str:
        return ns_run(self.lab.host, ["nft", *argv], stdin=stdin, check=check)

    def tables(self) -> list[str]:
        return [ln.strip() for ln in self.nft("list", "tables").splitlines() if ln.strip()]

    def clear_tables(self) -> None:
        for t in self.tables():
            _, fam, name = t.split()
            self.nft("delete", "table", fam, name)
        assert not self.tables()

    def count_elements(self, set_name: str) -> int:
        data = json.loads(self.nft("-j", "list", "set", *CONNGUARD_TABLE, set_name))
        for item in data["nftables"]:
            if "set" in item:
                return len(item["set"].get("elem", []))
        return 0

    # ------------------------------------------------------------------ setup
    def compile(self, sd: dict):
        from connguard.compiler import compile_host
        from connguard.model import parse_state

        t0 = time.perf_counter()
        st = parse_state(sd)
        t1 = time.perf_counter()
        rs = compile_host(st)
        t2 = time.perf_counter()
        return rs, t1 - t0, t2 - t1

    def run(self) -> None:
        a = self.a
        self.revs: list[tuple[str, str, str]] = []   # (label, commit, exported src directory)
        self.rev_labels: list[str] = []
        with tempfile.TemporaryDirectory(prefix="cgbench-rev-") as tmp:
            for i, rev in enumerate(a.compare_rev or ()):
                dest = os.path.join(tmp, str(i))
                os.mkdir(dest)
                commit = export_rev(rev, dest)
                label = f"cg-{rev}"
                self.revs.append((label, commit, os.path.join(dest, "src")))
                self.rev_labels.append(label)
                progress(f"{label}: src of {rev} = {commit[:12]} exported to {dest}")
            self._run()

    def _run(self) -> None:
        from connguard.lab import Lab

        a = self.a
        progress(f"building lab (1 VM, 1 client); {a.ports} ports; mode {'quick' if a.quick else 'full'}; "
                 f"working tree {tree_description()}")
        self.lab = Lab.up(vms=1, clients=1, sources=0)
        try:
            vm = self.lab.vms[0]
            self.real = vm.tap
            self.names = port_names(a.ports, vm.tap)
            self.real_ips = [vm.ipv4, vm.ipv6]
            progress(f"lab {self.lab.prefix}: host {self.lab.host}, real port {vm.tap} "
                     f"at sorted position {self.names.index(vm.tap) + 1} of {len(self.names)}")
            if not a.skip_throughput:
                self.throughput()
            if not a.skip_apply:
                self.apply_times()
            if not a.skip_bans:
                self.bans()
        finally:
            progress("removing lab")
            self.lab.down()
        self.report()

    # ------------------------------------------------------------------ 1. throughput
    def throughput(self) -> None:
        from connguard.nft import Applier, NftCli

        a, lab = self.a, self.lab
        vm, cl = lab.vms[0], lab.clients[0]
        ns_run(lab.host, ["sysctl", "-q", "-w", "net.netfilter.nf_conntrack_tcp_timeout_close=1"])
        sd = state_dict(self.names, self.real, self.real_ips)
        states = {"connguard": sd}
        if a.breakdown:
            # the same 10,000 ports with the real port's policy cut down, to see which rule costs what
            for cfg, keep in (("cg-dispatch", {"brute_force"}),
                              ("cg-no-ctcount", {"brute_force", "connection_rate_limit"})):
                web = {**WEB, "rules": [r for r in WEB["rules"] if r["type"] in keep]}
                states[cfg] = state_dict(self.names, self.real, self.real_ips, web=web)
        linear = linear_ruleset(self.names)
        forms = {f"form-{f}": cap_form_ruleset(f, a.cap_forms) for f in CAP_FORMS} if a.cap_forms else {}
        baseline: dict[str, str] = {}     # sysctl -> value before any configuration touched it
        recorded: dict[str, dict] = {}

        def record(cfg: str, rec: dict) -> None:
            for k, v in rec["sysctls_before"].items():
                baseline.setdefault(k, v)
            for k in rec["sysctls"]:      # leave the namespace as it was for the next recording
                ns_run(lab.host, ["sysctl", "-q", "-w", f"{k}={baseline[k]}"])
            recorded[cfg] = rec
            progress(f"  {cfg}: {rec['commands']} commands in {len(rec['batches'])} batch(es), compile_host "
                     f"{rec['compile_s'] * 1e3:.0f} ms, sysctls {rec['sysctls'] or 'none'} ({rec['module']})")

        progress("compiling and recording the connguard configurations")
        for cfg, st in states.items():   # the working tree, in this process
            self.clear_tables()
            record(cfg, compile_and_record(st, lab.host))
        with tempfile.TemporaryDirectory(prefix="cgbench-") as tmp:
            with open(os.path.join(tmp, "state.json"), "w") as fh:
                json.dump(sd, fh)
            for label, commit, src in self.revs:   # other revisions, each in its own interpreter
                self.clear_tables()
                out = os.path.join(tmp, f"{len(recorded)}.json")
                p = subprocess.run([sys.executable, os.path.abspath(__file__), "_compile", "--state",
                                    os.path.join(tmp, "state.json"), "--netns", lab.host, "--out", out],
                                   env={**os.environ, "PYTHONPATH": src}, capture_output=True, text=True, timeout=300)
                if p.returncode != 0:
                    raise RuntimeError(f"compiling with {label} ({commit[:12]}) failed:\n{p.stderr.strip()[-2000:]}")
                with open(out) as fh:
                    rec = json.load(fh)
                if not rec["module"].startswith(src):
                    raise RuntimeError(f"{label}: imported {rec['module']}, not the export in {src}")
                record(label, rec)
        if a.breakdown:
            # the full connguard ruleset without the forward chain's ban check (which every packet,
            # established ones included, passes before `ct state established accept`)
            base = recorded["connguard"]

            def kept(cmd: dict) -> bool:
                rule = cmd.get("add", {}).get("rule")
                return not (rule and rule.get("chain") == "forward" and rule.get("comment") == "bans")

            batches = [{**b, "nftables": [c for c in b["nftables"] if kept(c)]} for b in base["batches"]]
            dropped = base["commands"] - sum(len(b["nftables"]) for b in batches)
            if dropped == 1:
                recorded["cg-no-bans"] = {**base, "batches": batches, "commands": base["commands"] - 1}
            else:
                progress(f"  cg-no-bans left out: {dropped} forward-chain rules with comment 'bans', expected 1")
        self.clear_tables()
        current = dict(baseline)

        def set_sysctls(want: dict[str, str]) -> None:
            for k, v in {**baseline, **want}.items():
                if current.get(k) != v:
                    ns_run(lab.host, ["sysctl", "-q", "-w", f"{k}={v}"])
                    current[k] = v

        cli = NftCli(lab.host)

        def setup(cfg: str) -> None:
            self.clear_tables()
            set_sysctls(recorded[cfg]["sysctls"] if cfg in recorded else {})
            if cfg == "conntrack":
                self.nft("-f", "-", stdin=CT_ONLY)
            elif cfg in recorded:
                for payload in recorded[cfg]["batches"]:
                    cli.batch(payload)
            elif cfg == "linear":
                self.nft("-f", "-", stdin=linear)
            elif cfg in forms:
                self.nft("-f", "-", stdin=forms[cfg])
            lab.conntrack_flush()

        def check(cfg: str) -> str:
            """After a run: evidence that the configuration was on the path and refused nothing."""
            ct = lab.conntrack_count()
            if cfg == "none":
                return f"no tables, conntrack entries {ct}"
            if cfg == "conntrack" or cfg in forms:
                return f"conntrack entries {ct}"
            if cfg == "linear":
                out = self.nft("list", "chain", "inet", LINEAR_TABLE, f"p{self.names.index(self.real)}")
                pk = out.split("counter packets", 1)[1].split()[0]
                return f"conntrack entries {ct}, {self.real} chain counter {pk} packets"
            rec = recorded[cfg]
            if cfg.startswith("cg-") and cfg not in self.rev_labels:
                return f"conntrack entries {ct}"
            buckets = sum(self.nft("list", "set", *CONNGUARD_TABLE, s).count(self.real) for s in rec["remote_sets"])
            refused = sum(self.nft("list", "set", *CONNGUARD_TABLE, s).count(self.real) for s in rec["hit_sets"])
            return (f"conntrack entries {ct}, per-remote bucket for {self.real}: {'yes' if buckets else 'NO'}, "
                    f"ports with refusals: {refused}")

        server = subprocess.Popen(["ip", "netns", "exec", vm.netns, sys.executable, os.path.abspath(__file__),
                                   "_serve", "--port", "80", "--workers", str(a.server_procs)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        keeper = None
        perf_tmp = tempfile.TemporaryDirectory(prefix="cgbench-perf-")
        perf_dir = perf_tmp.name
        try:
            if server.stdout.readline().strip() != "ready":
                raise RuntimeError("server in the VM did not start")
            if a.hold:
                keeper = subprocess.Popen(["ip", "netns", "exec", vm.netns, sys.executable, os.path.abspath(__file__),
                                           "_keep", "--port", str(HOLD_PORT), "--n", str(a.hold)],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                if keeper.stdout.readline().strip() != "ready":
                    raise RuntimeError("keeper in the VM did not start")
            configs = (["none", "conntrack"] + self.rev_labels + ["connguard"] + ([] if a.skip_linear else ["linear"])
                       + [c for c in recorded if c != "connguard" and c not in self.rev_labels] + list(forms))
            runs: dict[str, list[dict]] = {c: [] for c in configs}
            progress(f"throughput: {a.rounds} rounds x {configs}, {a.duration:g} s each after "
                     f"{a.warmup:g} s warm-up; {a.conn_procs} connector + {a.server_procs} server processes")
            for rnd in range(1, a.rounds + 1):
                for cfg in configs:
                    t = time.perf_counter()
                    setup(cfg)
                    setup_s = time.perf_counter() - t
                    holder, held = None, 0
                    if a.hold:   # idle connections to the same port, opened once the ruleset is in
                        holder = subprocess.Popen(["ip", "netns", "exec", cl.netns, sys.executable,
                                                   os.path.abspath(__file__), "_hold", "--target", vm.ipv4,
                                                   "--port", str(HOLD_PORT), "--n", str(a.hold)],
                                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                        held = json.loads(holder.stdout.readline())["held"]
                    argv = [sys.executable, os.path.abspath(__file__), "_connect",
                            "--target", vm.ipv4, "--port", "80", "--procs", str(a.conn_procs),
                            "--duration", str(a.duration), "--warmup", str(a.warmup)]
                    idle0, tot0 = cpu_times()
                    if a.perf:
                        data = os.path.join(perf_dir, "perf.data")
                        p = subprocess.run(["perf", "record", "-q", "-F", str(PERF_FREQ), "-g", "-o", data, "--",
                                            "ip", "netns", "exec", cl.netns, *argv],
                                           capture_output=True, text=True, timeout=300)
                        if p.returncode != 0:
                            raise RuntimeError(f"perf record: {p.stderr.strip()[-500:]}")
                        out = p.stdout
                    else:
                        out = ns_run(cl.netns, argv)
                    idle1, tot1 = cpu_times()
                    if holder is not None:
                        holder.stdin.close()
                        holder.wait(timeout=60)
                    res = json.loads(out.strip().splitlines()[-1])
                    res["held"] = held
                    if a.perf:
                        res["perf"] = perf_costs(data, res["ok_with_warmup"])
                    res["idle"] = (idle1 - idle0) / max(1, tot1 - tot0)
                    res["setup"] = setup_s
                    res["check"] = check(cfg) if rnd == 1 or a.check_every_round else ""
                    runs[cfg].append(res)
                    errs = ", ".join(f"{k} {v}" for k, v in res["errors"].items()) or "none"
                    if res["lost"]:
                        errs += f" ({res['lost']:.2f} process-s spent on them)"
                    progress(f"  round {rnd} {cfg:9s} {res['rate']:9,.0f} conn/s  failures: {errs}; "
                             f"cpu idle {res['idle']:.0%}"
                             + (f"; {held} connections held" if a.hold else "")
                             + (f"; nft {res['perf']['nft_do_chain_inet']:.0f} ns/conn" if a.perf else "") + (f"; {res['check']}" if res["check"] else ""))
            self.clear_tables()
            set_sysctls({})
        finally:
            perf_tmp.cleanup()
            for proc in (server, keeper):
                if proc is not None and proc.stdin:
                    proc.stdin.close()
            if keeper is not None:
                keeper.wait(timeout=10)
            try:
                server.wait(timeout=10)
            except subprocess.TimeoutExpired:
                server.kill()
        self.results["throughput"] = runs

    # ------------------------------------------------------------------ 2. compile + apply
    def apply_times(self) -> None:
        from connguard.nft import Applier, NftCli
        from connguard.nft.bans import add_ban

        a, lab = self.a, self.lab
        reps = a.reps
        self.clear_tables()
        base_sd = state_dict(self.names, self.real, self.real_ips)
        r: dict[str, list] = {}

        def rec(key: str, value) -> None:
            r.setdefault(key, []).append(value)

        # full sync on a fresh table
        progress(f"apply: full sync of {len(self.names)} ports on a fresh table x{reps}")
        for i in range(reps):
            self.clear_tables()
            rs, t_parse, t_comp = self.compile(base_sd)
            ex = TimedExecutor(NftCli(lab.host))
            res = Applier(ex).apply(rs)
            rec("fresh", {"parse": t_parse, "compile": t_comp, "apply": res.seconds, "mode": res.mode,
                          "commands": res.commands, "nft_batch": ex.take("batch"), "nft_query": ex.take("query")})
            progress(f"  fresh #{i + 1}: parse {t_parse * 1e3:.0f} ms, compile_host {t_comp * 1e3:.0f} ms, "
                     f"apply {res.seconds * 1e3:.0f} ms ({res.mode}, {res.commands} commands; nft batch "
                     f"{ex.take('batch') * 1e3:.0f} ms, inventory query {ex.take('query') * 1e3:.0f} ms)")
        objs = {"sets": len(rs.sets), "chains": len(rs.chains),
                "elements": sum(len(s.elements or ()) for s in rs.sets)}
        r["objects"] = [objs]

        # bans in the table, then a restart: new Applier, full sync over the existing table
        nb = a.restart_bans
        cmds = [add_ban(str(ipaddress.IPv4Address(0xC6336400 + k)), self.names[(k * 7) % len(self.names)], 3600)
                for k in range(nb)]
        cmds += [add_ban(f"203.0.113.{k}", None, 3600) for k in range(10)]
        NftCli(lab.host).batch({"nftables": cmds})
        before = (self.count_elements("ban4"), self.count_elements("hostban4"))
        progress(f"apply: restart (new Applier) over {len(self.names)} ports holding {before[0]} port bans "
                 f"+ {before[1]} host bans x{reps}")
        for i in range(reps):
            rs, t_parse, t_comp = self.compile(base_sd)
            ex = TimedExecutor(NftCli(lab.host))
            applier = Applier(ex)
            res = applier.apply(rs)
            after = (self.count_elements("ban4"), self.count_elements("hostban4"))
            rec("restart", {"parse": t_parse, "compile": t_comp, "apply": res.seconds, "mode": res.mode,
                            "commands": res.commands, "nft_batch": ex.take("batch"),
                            "nft_query": ex.take("query"), "bans_before": before, "bans_after": after})
            progress(f"  restart #{i + 1}: compile {(t_parse + t_comp) * 1e3:.0f} ms, apply {res.seconds * 1e3:.0f} ms "
                     f"({res.mode}, {res.commands} commands; nft batch {ex.take('batch') * 1e3:.0f} ms, "
                     f"inventory query {ex.take('query') * 1e3:.0f} ms); bans before {before}, after {after}")

        # deltas on the same Applier (the last one above, which has applied base_sd)
        plus_sd = state_dict(self.names, self.real, self.real_ips, extra=["tapnew0"])
        moved = self.names[len(self.names) // 4]   # a web port
        moved_sd = state_dict(self.names, self.real, self.real_ips, overrides={moved: "db"})
        progress(f"apply: deltas on the same Applier x{reps}: add/remove port tapnew0, move {moved} web->db->web")
        steps = [("add one port", plus_sd), ("remove it again", base_sd),
                 ("change one port's policy", moved_sd), ("change it back", base_sd)]
        for i in range(reps):
            for label, sd in steps:
                rs, t_parse, t_comp = self.compile(sd)
                ex.reset()
                t = time.perf_counter()
                mode, plan = applier.plan(rs)
                t_plan = time.perf_counter() - t
                res = applier.apply(rs)
                rec(label, {"parse": t_parse, "compile": t_comp, "apply": res.seconds, "plan": t_plan,
                            "mode": res.mode, "commands": res.commands, "nft_batch": ex.take("batch")})
                progress(f"  {label:25s} #{i + 1}: compile {(t_parse + t_comp) * 1e3:4.0f} ms, apply "
                         f"{res.seconds * 1e3:4.0f} ms ({res.mode}, {res.commands} commands; plan "
                         f"{t_plan * 1e3:.0f} ms, nft batch {ex.take('batch') * 1e3:.0f} ms)")
        self.results["apply"] = r
        self.profile_compile(base_sd)
        rs_plus = self.compile(plus_sd)[0]
        self.results["delta_profile"] = self.profile(lambda: applier.plan(rs_plus))
        self.nft_probe()

    def nft_probe(self) -> None:
        """What one small nft call costs (ip netns exec + nft start + nft's cache fetch) with the
        connguard table present, with nothing, and with a table of 18,000 named limit objects
        (the per-port objects of an earlier layout: nft loads every object into its cache)."""
        from connguard.nft import NftCli

        cli = NftCli(self.lab.host)
        probe = {"nftables": [
            {"add": {"table": {"family": "inet", "name": "cgprobe"}}},
            {"add": {"set": {"family": "inet", "table": "cgprobe", "name": "s", "type": "ifname"}}},
            {"add": {"element": {"family": "inet", "table": "cgprobe", "name": "s", "elem": ["tapprobe"]}}},
            {"delete": {"element": {"family": "inet", "table": "cgprobe", "name": "s", "elem": ["tapprobe"]}}}]}

        def timed() -> float:
            ts = []
            for _ in range(5):
                t = time.perf_counter()
                cli.batch(probe)
                ts.append(time.perf_counter() - t)
            return median(ts)

        out = {f"with the connguard table ({len(self.names)} ports)": timed()}
        self.clear_tables()
        out["empty ruleset"] = timed()
        n = 18_000
        self.nft("-f", "-", stdin="table inet cglimits {\n" + "".join(
            f"  limit l{i} {{ rate 1000/second burst 1000 packets }}\n" for i in range(n)) + "}\n")
        out[f"with only a table of {n} named limits"] = timed()
        self.clear_tables()
        self.results["nft_probe"] = out
        progress("nft per-call cost (one-element add+delete): "
                 + "; ".join(f"{k}: {v * 1e3:.0f} ms" for k, v in out.items()))

    @staticmethod
    def profile(fn):
        import cProfile
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        fn()
        prof.disable()
        st = pstats.Stats(prof)
        rows = sorted(st.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:5]
        return [(f"{os.path.basename(k[0])}:{k[1]}({k[2]})", v[1], v[2], v[3]) for k, v in rows]

    def profile_compile(self, sd: dict) -> None:
        """Where compile + plan time goes (cProfile, top functions by own time)."""
        import cProfile
        import pstats

        from connguard.compiler import compile_host
        from connguard.model import parse_state
        from connguard.nft import Applier, FakeExecutor

        prof = cProfile.Profile()
        prof.enable()
        rs = compile_host(parse_state(sd))
        Applier(FakeExecutor()).plan(rs)
        prof.disable()
        st = pstats.Stats(prof)
        rows = sorted(st.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:8]  # tottime
        total = sum(v[2] for v in st.stats.values())
        self.results["profile"] = [(f"{os.path.basename(k[0])}:{k[1]}({k[2]})", v[1], v[2], v[3]) for k, v in rows]
        self.results["profile_total"] = total

    # ------------------------------------------------------------------ 3. bans
    def bans(self) -> None:
        from connguard.compiler import compile_host
        from connguard.model import parse_state
        from connguard.nft import Applier, NftCli
        from connguard.nft.bans import add_ban, add_bans

        a, lab = self.a, self.lab
        n = a.bans
        self.clear_tables()
        Applier(NftCli(lab.host)).apply(compile_host(parse_state(state_dict(self.names, self.real, self.real_ips))))
        addrs = [str(ipaddress.IPv4Address(0x64400000 + k)) for k in range(n)]   # 100.64.0.0/10
        ports = [self.names[k % len(self.names)] for k in range(n)]
        cli = NftCli(lab.host)
        r: dict[str, list] = {"per_command": [], "one_elem_list": []}

        def build(method: str) -> dict:
            if method == "per_command":
                return {"nftables": [add_ban(ip, p, 600) for ip, p in zip(addrs, ports)]}
            # what the agent does (connguard.nft.bans.add_bans): one command per set
            return {"nftables": add_bans([(ip, p, 600) for ip, p in zip(addrs, ports)])}

        progress(f"bans: {n} distinct addresses on {min(n, len(self.names))} real port names into ban4, "
                 f"x{a.reps} per method, alternating")
        for i in range(a.reps):
            for method in ("per_command", "one_elem_list"):
                self.nft("flush", "set", *CONNGUARD_TABLE, "ban4")
                t = time.perf_counter()
                payload = build(method)
                t_build = time.perf_counter() - t
                t = time.perf_counter()
                size = len(json.dumps(payload, separators=(",", ":")))
                t_dumps = time.perf_counter() - t
                t = time.perf_counter()
                cli.batch(payload)
                t_load = time.perf_counter() - t
                count = self.count_elements("ban4") if i == 0 else None
                r[method].append({"build": t_build, "dumps": t_dumps, "load": t_load, "count": count, "size": size,
                                  "commands": len(payload["nftables"])})
                progress(f"  {method:14s} #{i + 1}: build {t_build * 1e3:.0f} ms (python), one nft batch "
                         f"{t_load * 1e3:.0f} ms ({len(payload['nftables'])} commands, json.dumps alone "
                         f"{t_dumps * 1e3:.0f} ms)"
                         + (f"; ban4 now holds {count} elements" if count is not None else ""))
        self.nft("flush", "set", *CONNGUARD_TABLE, "ban4")
        self.results["bans"] = r

    # ------------------------------------------------------------------ report
    def report(self) -> None:
        a, R = self.a, self.results
        print()
        print("=" * 100)
        print(f"connguard dataplane benchmark, {time.strftime('%Y-%m-%d %H:%M %Z')}; nproc {os.cpu_count()}, "
              f"kernel {os.uname().release}, {subprocess.run(['nft', '--version'], capture_output=True, text=True).stdout.strip()}")
        print(f"command: {' '.join(['python', 'bench/dataplane_bench.py', *sys.argv[1:]])}")
        rows = []   # (measurement, figure, target, verdict)

        def verdict(ok: bool) -> str:
            return "met" if ok else "MISSED"

        if "throughput" in R:
            runs = R["throughput"]
            med = {c: median([x["rate"] for x in v]) for c, v in runs.items()}
            print()
            print(f"### 1. New-connection throughput through the lab host, {a.ports} ports "
                  f"(closed loop: {a.conn_procs} connector processes, TCP connect + RST close; "
                  f"{a.server_procs} accept+close processes; {a.duration:g} s per run)")
            print()
            print("| round | " + " | ".join(runs) + " |")
            print("|---" * (len(runs) + 1) + "|")
            for i in range(len(next(iter(runs.values())))):
                print(f"| {i + 1} | " + " | ".join(f"{runs[c][i]['rate']:,.0f}" for c in runs) + " |")
            print("| **median** | " + " | ".join(f"**{med[c]:,.0f}**" for c in runs) + " |")
            fails = {c: sum(sum(x["errors"].values()) for x in v) for c, v in runs.items()}
            print("| failed connects | " + " | ".join(str(fails[c]) for c in runs) + " |")
            print("| cpu idle (median) | " + " | ".join(f"{median([x['idle'] for x in runs[c]]):.0%}" for c in runs) + " |")
            if a.hold:
                print(f"| idle connections held to port {HOLD_PORT} (min) | "
                      + " | ".join(str(min(x["held"] for x in runs[c])) for c in runs) + " |")
            if a.perf:
                print()
                print("Kernel CPU time per connection in the connector's process tree (perf record -g, inclusive, "
                      "median over rounds, ns; `total` is everything: the client's python, its syscalls and the "
                      "host's forward path of its packets):")
                print()
                print("| ns / connection | " + " | ".join(runs) + " |")
                print("|---" * (len(runs) + 1) + "|")
                for sym in ("total", *PERF_SYMBOLS):
                    print(f"| {sym} | " + " | ".join(f"{median([x['perf'][sym] for x in runs[c]]):,.0f}" for c in runs) + " |")
                forms = [c for c in runs if c.startswith("form-")]
                if forms:
                    base = median([x["perf"]["nft_do_chain_inet"] for x in runs["conntrack"]])
                    print()
                    print(f"- per copy of each --cap-forms formulation ({a.cap_forms} copies; nftables time above "
                          "conntrack only, divided by the copies): "
                          + "; ".join(f"{c[5:]} {(median([x['perf']['nft_do_chain_inet'] for x in runs[c]]) - base) / a.cap_forms:,.0f} ns"
                                      for c in forms))
            print()
            for c in runs:
                if runs[c][0]["check"]:
                    print(f"- {c}: {runs[c][0]['check']}")
            # per-round ratios: each against the "none" run of the same round
            rr = {c: [runs[c][i]["rate"] / runs["none"][i]["rate"] for i in range(len(runs[c]))] for c in runs}
            print()
            for c in [c for c in runs if c != "none"]:
                print(f"- {c}/none: ratio of medians {med[c] / med['none']:.3f}; per round "
                      + ", ".join(f"{x:.3f}" for x in rr[c]) + f" (median {median(rr[c]):.3f})")
            n = len(rr["none"])

            def pair(x: str, y: str) -> list[float]:
                return [runs[x][i]["rate"] / runs[y][i]["rate"] for i in range(n)]

            def line(x: str, y: str, what: str = "") -> str:
                pr = pair(x, y)
                return (f"- {x}/{y}{what}: ratio of medians {med[x] / med[y]:.3f}; per round "
                        + ", ".join(f"{v:.3f}" for v in pr) + f" (median {median(pr):.3f})")

            for c in [c for c in runs if c.startswith("cg") or c == "connguard"]:
                print(line(c, "conntrack", " (rules alone)" if c == "connguard" else ""))
            for label, commit, _ in self.revs:
                print(line("connguard", label, f" (after/before; before = {commit[:12]}, after = working tree "
                                               f"{tree_description()})"))
                if a.perf:
                    nft = {c: median([x["perf"]["nft_do_chain_inet"] for x in runs[c]]) for c in ("connguard", label, "conntrack")}
                    print(f"- nftables CPU per connection (--perf, medians): {label} {nft[label]:,.0f} ns, connguard "
                          f"{nft['connguard']:,.0f} ns (after - before {nft['connguard'] - nft[label]:+,.0f} ns; "
                          f"conntrack only {nft['conntrack']:,.0f} ns)")
            rows += [
                ("new conn/s, no ruleset", f"{med['none']:,.0f}", "", ""),
                ("new conn/s, conntrack only", f"{med['conntrack']:,.0f}", "", ""),
                (f"new conn/s, connguard {a.ports} ports", f"{med['connguard']:,.0f}", "", ""),
            ]
            if "linear" in runs:
                rows.append((f"new conn/s, linear {a.ports} rules", f"{med['linear']:,.0f}", "", ""))
            rows += [
                ("connguard / none (ratio of medians; median of per-round ratios)",
                 f"{med['connguard'] / med['none']:.3f}; {median(rr['connguard']):.3f}", ">= 0.95",
                 verdict(med['connguard'] / med['none'] >= 0.95)),
                ("connguard / conntrack only (ratio of medians; median of per-round ratios)",
                 f"{med['connguard'] / med['conntrack']:.3f}; {median(pair('connguard', 'conntrack')):.3f}", ">= 0.95",
                 verdict(median(pair('connguard', 'conntrack')) >= 0.95)),
                ("conntrack only / none", f"{med['conntrack'] / med['none']:.3f}", "", ""),
            ]
            if "linear" in runs:
                rows.append(("linear / none", f"{med['linear'] / med['none']:.3f}; {median(rr['linear']):.3f}", "", ""))
            for label, commit, _ in self.revs:
                rows += [(f"{label} ({commit[:12]}) / conntrack only",
                          f"{med[label] / med['conntrack']:.3f}; {median(pair(label, 'conntrack')):.3f}", "", ""),
                         (f"connguard (working tree) / {label}",
                          f"{med['connguard'] / med[label]:.3f}; {median(pair('connguard', label)):.3f}", "", "")]
            rows += [(f"{c} / none", f"{med[c] / med['none']:.3f}", "", "") for c in runs
                     if c.startswith("cg-") and c not in self.rev_labels]

        if "apply" in R:
            ap = R["apply"]
            print()
            o = ap["objects"][0]
            print(f"### 2. Compile + apply, {a.ports} ports ({o['chains']} chains, {o['sets']} sets/maps, "
                  f"{o['elements']} set/map elements); median of {a.reps}")
            print()
            print("| step | parse (ms) | compile_host (ms) | apply (ms) | of which nft batch (ms) | compile+apply (ms) | mode | commands |")
            print("|---|---|---|---|---|---|---|---|")
            for key in ("fresh", "restart", "add one port", "remove it again", "change one port's policy", "change it back"):
                xs = ap[key]
                p, c, ay = (median([x[k] for x in xs]) * 1e3 for k in ("parse", "compile", "apply"))
                nb = median([x["nft_batch"] for x in xs]) * 1e3
                tot = median([x["parse"] + x["compile"] + x["apply"] for x in xs]) * 1e3
                label = {"fresh": "full sync, fresh table", "restart": "full sync, restart (new Applier)"}.get(key, key + " (delta)")
                print(f"| {label} | {p:.0f} | {c:.0f} | {ay:.0f} | {nb:.0f} | {tot:.0f} | {xs[0]['mode']} | {xs[0]['commands']} |")
            rs_ = ap["restart"]
            kept = all(x["bans_after"] == x["bans_before"] for x in rs_)
            print()
            print(f"- bans across the restart full sync: before {rs_[0]['bans_before']} (ban4, hostban4), after "
                  + ", ".join(str(x["bans_after"]) for x in rs_) + f" -> {'kept' if kept else 'LOST'}")
            full = median([x["parse"] + x["compile"] + x["apply"] for x in ap["fresh"]])
            rfull = median([x["parse"] + x["compile"] + x["apply"] for x in ap["restart"]])
            one_apply = max(median([x["apply"] for x in ap[k]]) for k in ("add one port", "change one port's policy"))
            one_tot = max(median([x["parse"] + x["compile"] + x["apply"] for x in ap[k]])
                          for k in ("add one port", "change one port's policy"))
            rows += [
                (f"full sync {a.ports} ports, fresh: compile+apply", f"{full:.2f} s", "< 2 s", verdict(full < 2)),
                ("full sync, restart with bans: compile+apply", f"{rfull:.2f} s", "< 2 s", verdict(rfull < 2)),
                ("bans kept across restart", "yes" if kept else "NO", "yes", verdict(kept)),
                ("one-port change: apply (delta) alone, worst of add/policy", f"{one_apply * 1e3:.0f} ms", "< 100 ms",
                 verdict(one_apply < 0.1)),
                ("one-port change: compile+apply, worst of add/policy", f"{one_tot * 1e3:.0f} ms", "< 100 ms",
                 verdict(one_tot < 0.1)),
            ]
            if "profile" in R:
                print()
                print(f"- cProfile of compile_host + Applier.plan (full) for {a.ports} ports, "
                      f"{R['profile_total'] * 1e3:.0f} ms own time in total (profiled, slower than above); top by own time:")
                for name, ncalls, tt, ct in R["profile"]:
                    print(f"    {tt * 1e3:7.1f} ms own {ct * 1e3:7.1f} ms cum {ncalls:8d} calls  {name}")
            if "delta_profile" in R:
                print("- cProfile of Applier.plan for the one-port delta (profiled; top by own time):")
                for name, ncalls, tt, ct in R["delta_profile"]:
                    print(f"    {tt * 1e3:7.1f} ms own {ct * 1e3:7.1f} ms cum {ncalls:8d} calls  {name}")
            if "nft_probe" in R:
                print("- one small nft call (ip netns exec + nft, one-element add+delete), median of 5: "
                      + "; ".join(f"{k}: {v * 1e3:.0f} ms" for k, v in R["nft_probe"].items()))

        if "bans" in R:
            b = R["bans"]
            print()
            print(f"### 3. Loading {a.bans} bans (ban4, ifname . address, timeout 600 s) in one nft batch; median of {a.reps}")
            print()
            print("| method | commands | build commands in python (ms) | json.dumps alone (ms) "
                  "| NftCli.batch incl. json.dumps (ms) | JSON size (MB) | elements in ban4 after |")
            print("|---|---|---|---|---|---|---|")
            label = {"per_command": "one add_ban command per ban", "one_elem_list": "one command, one elem list"}
            for m, xs in b.items():
                print(f"| {label[m]} | {xs[0]['commands']} | {median([x['build'] for x in xs]) * 1e3:.0f} | "
                      f"{median([x['dumps'] for x in xs]) * 1e3:.0f} | {median([x['load'] for x in xs]) * 1e3:.0f} | {xs[0]['size'] / 1e6:.1f} | {xs[0]['count']} |")
            pc, one = (median([x["load"] for x in b[m]]) for m in ("per_command", "one_elem_list"))
            faster = "one elem list" if one < pc else "one command per ban"
            print()
            print(f"- faster: {faster} ({min(pc, one) * 1e3:.0f} ms vs {max(pc, one) * 1e3:.0f} ms, "
                  f"x{max(pc, one) / min(pc, one):.1f})")
            rows += [
                (f"{a.bans} bans, one add_ban command each", f"{pc * 1e3:.0f} ms", "< 1 s", verdict(pc < 1)),
                (f"{a.bans} bans, one command with one elem list", f"{one * 1e3:.0f} ms", "< 1 s", verdict(one < 1)),
            ]

        print()
        print("### Summary")
        print()
        print("| measurement | figure | target | verdict |")
        print("|---|---|---|---|")
        for row in rows:
            print("| " + " | ".join(row) + " |")
        print()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd")
    s = sub.add_parser("_serve", help=argparse.SUPPRESS)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--workers", type=int, default=2)
    c = sub.add_parser("_connect", help=argparse.SUPPRESS)
    c.add_argument("--target", required=True)
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--procs", type=int, default=2)
    c.add_argument("--duration", type=float, required=True)
    c.add_argument("--warmup", type=float, default=0.5)
    h = sub.add_parser("_hold", help=argparse.SUPPRESS)
    h.add_argument("--target", required=True)
    h.add_argument("--port", type=int, required=True)
    h.add_argument("--n", type=int, required=True)
    kp = sub.add_parser("_keep", help=argparse.SUPPRESS)
    kp.add_argument("--port", type=int, required=True)
    kp.add_argument("--n", type=int, required=True)
    k = sub.add_parser("_compile", help=argparse.SUPPRESS)
    k.add_argument("--state", required=True)
    k.add_argument("--netns", required=True)
    k.add_argument("--out", required=True)
    ap.add_argument("--quick", action="store_true", help="fewer, shorter rounds (about a minute)")
    ap.add_argument("--ports", type=int, default=10_000)
    ap.add_argument("--bans", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, help="throughput rounds (default 5, quick 2)")
    ap.add_argument("--duration", type=float, help="seconds per throughput run (default 6, quick 2)")
    ap.add_argument("--warmup", type=float, help="seconds before counting starts (default 1, quick 0.5)")
    ap.add_argument("--reps", type=int, help="repetitions of each apply/ban timing (default 3, quick 1)")
    ap.add_argument("--conn-procs", type=int, default=2)
    ap.add_argument("--server-procs", type=int, default=2)
    ap.add_argument("--restart-bans", type=int, default=1000, help="port bans present during the restart sync")
    ap.add_argument("--check-every-round", action="store_true")
    ap.add_argument("--breakdown", action="store_true",
                    help="also run connguard with the real port's policy cut down (dispatch only; no ct count) "
                         "and without the forward chain's ban check")
    ap.add_argument("--compare-rev", action="append", metavar="REV",
                    help="also run the state compiled and applied by git revision REV (e.g. main), interleaved "
                         "with the working tree's; repeatable. Implies --skip-linear")
    ap.add_argument("--throughput-only", action="store_true", help="only part 1 (same as --skip-apply --skip-bans)")
    ap.add_argument("--skip-linear", action="store_true", help="leave out the iptables-style reference")
    ap.add_argument("--hold", type=int, default=0, metavar="N",
                    help="during every throughput run keep N idle connections open to the real port "
                         "(another service on it): what the length of the port's conntrack count costs")
    ap.add_argument("--perf", action="store_true",
                    help="perf-record the connector of every throughput run and report the kernel's CPU time per "
                         "connection in nftables, the ct count, set updates and lookups (needs perf)")
    ap.add_argument("--cap-forms", type=int, default=0, metavar="K",
                    help="also run K copies of each formulation of a per-port count (ct count in a set keyed by "
                         "ifname or by ifindex, anonymous ct count, a set with a limit, a plain set update); "
                         "with --perf, what one costs")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-apply", action="store_true")
    ap.add_argument("--skip-bans", action="store_true")
    args = ap.parse_args()
    if args.cmd == "_serve":
        return run_server(args.port, args.workers)
    if args.cmd == "_connect":
        return run_connector(args.target, args.port, args.procs, args.duration, args.warmup)
    if args.cmd == "_hold":
        return run_holder(args.target, args.port, args.n)
    if args.cmd == "_keep":
        return run_keeper(args.port, args.n)
    if args.cmd == "_compile":
        return run_compile(args.state, args.netns, args.out)
    if args.throughput_only:
        args.skip_apply = args.skip_bans = True
    if args.compare_rev:
        args.skip_linear = True
    q = args.quick
    args.rounds = args.rounds or (2 if q else 5)
    args.duration = args.duration or (2.0 if q else 6.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if q else 1.0)
    args.reps = args.reps or (1 if q else 3)
    if os.geteuid() != 0:
        sys.exit("needs root (network namespaces, nft)")
    Bench(args).run()


if __name__ == "__main__":
    main()
