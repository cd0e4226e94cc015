#!/usr/bin/env python3
"""Agent benchmark: what the standalone agent costs with 10,000 ports and many bans.

    python bench/agent_idle_bench.py                      # 2,000 and 100,000 bans, this tree
    python bench/agent_idle_bench.py --compare-rev main   # the same, side by side with REV
    python bench/agent_idle_bench.py --format json        # the state file written as JSON (also YAML)

Needs root, nft, iproute2. For each configuration (revision, number of bans) the script creates
a network namespace of its own (``cgib<pid>``, deleted afterwards, also on failure), writes a
state file (YAML, as an operator would) with ``--ports`` ports under one policy (a connection
rate limit and an ssh brute-force rule) and N bans on those ports (``ifname . address``, a day
long), and runs the whole agent process (``connguard agent --state-file F --netns NS``) of that
revision, as a user would. It measures:

- **first start**: from spawning the process until its ban book (``bans.json``) holds every
  ban, i.e. the first pass is done (state file parsed, ruleset applied, bans in the kernel);
- **idle CPU**: after a settle time and then until two seconds in a row cost it under a tenth
  of a core (its second pass audits the bans the first one placed), the process's own CPU time (user + system, its waited-for
  children included) over ``--idle`` seconds, from ``/proc/PID/stat``, as a share of one core;
- **RSS**: ``VmRSS`` at the end of the idle window and the peak ``VmHWM``, from
  ``/proc/PID/status``;
- the number of elements of ``ban4`` in the kernel afterwards (read over netlink), as a check.

Configurations run one after the other (2 cores, shared: nothing else of ours runs meanwhile).
Nothing here asserts a time: the script prints raw figures and ratios of figures measured in
the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
TICK = os.sysconf("SC_CLK_TCK")

POLICY = {"name": "web", "rules": [
    {"type": "connection_rate_limit", "direction": "ingress", "scope": "remote_ip", "max_cps": 50},
    {"type": "brute_force", "profile": "ssh"}]}


def progress(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def state_text(ports: int, bans: int, fmt: str = "yaml") -> str:
    names = [f"tap{i:05d}" for i in range(ports)]
    doc = {
        "policies": [POLICY],
        "default_policy": "web",
        "ports": [{"interface_name": n, "fixed_ips": [f"172.{16 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}"]}
                  for i, n in enumerate(names)],
        # remote i on port i mod ports: every address distinct, every port a few bans
        "bans": [{"ip_address": f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
                  "interface_name": names[i % ports], "seconds": 86_400} for i in range(bans)],
    }
    if fmt == "json":  # JSON is YAML: a revision without the JSON fast path parses it as YAML
        return json.dumps(doc, indent=1)
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(doc, Dumper=dumper, default_flow_style=False, sort_keys=False)


def cpu_ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    # utime stime cutime cstime are fields 14-17 (1-based) of the whole line
    return sum(int(x) for x in fields[11:15])


def status_kb(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def book_bans(path: Path) -> int:
    try:
        return len(json.loads(path.read_text()).get("bans", []))
    except (OSError, ValueError):
        return -1


def kernel_ban4(netns: str) -> int:
    sys.path.insert(0, str(ROOT / "src"))
    from connguard.nft import NftCli
    from connguard.nft import readback as rb

    elems, _ = rb.elements(NftCli(netns), "ban4")
    return len(elems)


def run_one(src: Path, label: str, ports: int, bans: int, idle: float, settle: float, timeout: float,
            fmt: str) -> dict:
    netns = f"cgib{os.getpid()}"
    tmp = Path(tempfile.mkdtemp(prefix="cgib-"))
    subprocess.run(["ip", "netns", "add", netns], check=True)
    proc = None
    try:
        state = tmp / "state.yaml"
        state.write_text(state_text(ports, bans, fmt))
        work = tmp / "agent"
        env = {**os.environ, "PYTHONPATH": str(src)}
        progress(f"{label}: {ports} ports, {bans} bans ({fmt}): starting the agent")
        log = open(tmp / "agent.log", "w")
        start = time.monotonic()
        proc = subprocess.Popen([sys.executable, "-c", "from connguard.cli.main import main; main()", "agent",
                                 "--state-file", str(state), "--netns", netns, "--workdir", str(work)],
                                env=env, stdout=log, stderr=subprocess.STDOUT)
        book = work / "bans.json"
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{label}: the agent exited ({proc.returncode}); see {tmp}/agent.log")
            if time.monotonic() - start > timeout:
                raise RuntimeError(f"{label}: no complete ban book after {timeout} s")
            if book.exists() and book_bans(book) >= bans:
                break
            time.sleep(0.05 if bans < 10_000 else 0.5)
        first_start = time.monotonic() - start
        progress(f"{label}: first pass done in {first_start:.1f} s; settling {settle} s")
        time.sleep(settle)
        # the second pass audits what the first one placed (a whole read of the ban sets, and a
        # rewrite of the book): wait until two seconds in a row cost under a tenth of a core
        quiet_from = time.monotonic()
        while time.monotonic() - quiet_from < 120:
            c, t = cpu_ticks(proc.pid), time.monotonic()
            time.sleep(2)
            if (cpu_ticks(proc.pid) - c) / TICK / (time.monotonic() - t) < 0.1:
                break
        quiet = time.monotonic() - quiet_from
        t0, c0 = time.monotonic(), cpu_ticks(proc.pid)
        time.sleep(idle)
        t1, c1 = time.monotonic(), cpu_ticks(proc.pid)
        out = {"label": label, "ports": ports, "bans": bans, "format": fmt, "first_start_s": round(first_start, 2),
               "idle_cpu_pct": round(100 * (c1 - c0) / TICK / (t1 - t0), 2),
               "rss_mb": round(status_kb(proc.pid, "VmRSS") / 1024, 1),
               "peak_rss_mb": round(status_kb(proc.pid, "VmHWM") / 1024, 1),
               "waited_quiet_s": round(quiet, 1)}
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:  # an agent busy reading its ban sets every pass
            proc.kill()
            proc.wait()
        out["kernel_ban4"] = kernel_ban4(netns)
        progress(f"{label}: {out}")
        print(json.dumps(out), flush=True)
        return out
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        subprocess.run(["ip", "netns", "delete", netns], check=False)
        shutil.rmtree(tmp, ignore_errors=True)


def export(rev: str, into: Path) -> Path:
    """``src`` of git revision ``rev``, exported into ``into``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into / "src"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ports", type=int, default=10_000)
    ap.add_argument("--bans", default="2000,100000", help="comma-separated ban counts")
    ap.add_argument("--idle", type=float, default=30.0, help="seconds of idle CPU measurement")
    ap.add_argument("--settle", type=float, default=10.0, help="seconds between the first pass and the idle window")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds allowed for the first pass")
    ap.add_argument("--format", choices=("yaml", "json"), default="yaml", help="how the state file is written")
    ap.add_argument("--compare-rev", action="append", default=[], help="git revision to run side by side")
    a = ap.parse_args()
    counts = [int(x) for x in a.bans.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="cgib-rev-") as revs:
        trees = [("this tree", ROOT / "src")]
        for i, rev in enumerate(a.compare_rev):
            d = Path(revs) / str(i)
            d.mkdir()
            trees.append((rev, export(rev, d)))
        for label, src in trees:
            for n in counts:
                results.append(run_one(src, label, a.ports, n, a.idle, a.settle, a.timeout, a.format))
    print(f"\nstate file: {a.format}")
    print(f"{'revision':<12} {'ports':>6} {'bans':>8} {'first start s':>14} {'idle CPU % core':>16} "
          f"{'RSS MB':>7} {'peak RSS MB':>12} {'ban4 in kernel':>15}")
    for r in results:
        print(f"{r['label']:<12} {r['ports']:>6} {r['bans']:>8} {r['first_start_s']:>14} {r['idle_cpu_pct']:>16} "
              f"{r['rss_mb']:>7} {r['peak_rss_mb']:>12} {r['kernel_ban4']:>15}")
    lo, hi = min(counts), max(counts)
    for label in dict.fromkeys(r["label"] for r in results):
        by = {r["bans"]: r for r in results if r["label"] == label}
        if lo != hi and by[lo]["idle_cpu_pct"] > 0:
            print(f"{label}: idle CPU {hi} bans / {lo} bans = {by[hi]['idle_cpu_pct'] / by[lo]['idle_cpu_pct']:.2f}; "
                  f"first start {hi} / {lo} = {by[hi]['first_start_s'] / by[lo]['first_start_s']:.2f}")
    if len(results) > len(counts):
        for n in counts:
            new = next(r for r in results if r["bans"] == n and r["label"] == "this tree")
            for old in (r for r in results if r["bans"] == n and r["label"] != "this tree"):
                cpu = f"{old['idle_cpu_pct'] / new['idle_cpu_pct']:.1f}" if new["idle_cpu_pct"] > 0 else "n/a"
                print(f"{n} bans: {old['label']} / this tree: idle CPU {cpu}, first start "
                      f"{old['first_start_s'] / new['first_start_s']:.1f}, RSS {old['rss_mb'] / new['rss_mb']:.2f}")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
