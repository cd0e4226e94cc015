"""State-file parsing benchmark: the whole ``connguard apply FILE --dry-run`` process, before and
after the switch to libyaml's parser, side by side in one run.

    python3 bench/parse_bench.py [--repeat 5] [--ports 10000] [--bans 100000] [--baseline REV]

Two generated state files: FILE A has ``--ports`` ports (IPv4 + IPv6 address each, three
policies); FILE B has ``--bans`` bans (per-port addresses and host-wide prefixes) on 8 ports.
A is run through ``connguard apply A --dry-run`` (load, compile and plan, print the batch to
/dev/null; the kernel is not touched), B through ``load_state_file(B)`` (compiling that many
state-file bans is quadratic today, see docs/benchmarks.md), each as a fresh Python process,
in three variants, interleaved so that other jobs on the machine weigh on all alike:

- ``baseline``: the source tree of git revision REV (default ``main``; its loader is
  ``yaml.safe_load``, the pure-Python parser), exported with ``git archive``;
- ``pure``: this tree with libyaml hidden from PyYAML (``yaml.CSafeLoader`` removed before
  connguard is imported), so the loader falls back to the pure-Python parser;
- ``libyaml``: this tree as it is.

Per variant: median and minimum wall time, and median CPU time (user + system, of the child),
which other jobs disturb less than wall time. The ratio is baseline / libyaml. Then, in
process, the parse alone (both parsers) and the validation, to show where the time goes.
Figures go to docs/benchmarks.md, section "State file parsing".
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent.parent
# argv: mode (pure: hide libyaml), then "load FILE" or the connguard command line
RUN = """import sys, yaml
if sys.argv[1] == 'pure':
    del yaml.CSafeLoader
if sys.argv[2] == 'load':
    from connguard.model import load_state_file
    load_state_file(sys.argv[3])
else:
    sys.argv[1:2] = []
    from connguard.cli.main import main
    main()
"""


def ports_state(n: int) -> dict:
    policies = [
        {"name": "web", "rules": [
            {"type": "connection_rate_limit", "direction": "ingress", "scope": "remote_ip", "max_cps": 20},
            {"type": "connection_limit", "direction": "ingress", "scope": "remote_ip", "max_connections": 200},
            {"type": "syn_flood", "port_range_min": 80, "port_range_max": 443, "max_syn_rate": 2000},
            {"type": "brute_force", "profile": "ssh"}]},
        {"name": "db", "rules": [{"type": "connection_limit", "direction": "ingress", "max_connections": 500}]},
        {"name": "watch", "enforcement": "monitor", "rules": [
            {"type": "connection_rate_limit", "direction": "egress", "max_cps": 100}]},
    ]
    ports = [{"interface_name": f"tap{i:05d}",
              "fixed_ips": [f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", f"fd00::{i:x}"],
              "policy": ("web", "db", "watch")[i % 3]} for i in range(n)]
    return {"policies": policies, "ports": ports, "default_policy": "web"}


def bans_state(n: int) -> dict:
    ports = [{"interface_name": f"tap{i}", "fixed_ips": [f"10.0.0.{i + 1}"]} for i in range(8)]
    bans = []
    for i in range(n):
        if i % 4 == 3:  # host-wide prefixes, disjoint (the kernel refuses overlaps in one batch)
            bans.append({"ip_address": f"100.{i >> 16 & 63}.{i >> 8 & 255}.{i & 252}/30", "seconds": 3600,
                         "reason": "shared list"})
        else:
            bans.append({"ip_address": f"198.{18 + (i >> 16 & 1)}.{i >> 8 & 255}.{i & 255}",
                         "interface_name": f"tap{i % 8}", "seconds": 600})
    return {"policies": [{"name": "p", "rules": [{"type": "brute_force", "profile": "ssh"}]}],
            "ports": ports, "default_policy": "p", "bans": bans}


def export_tree(rev: str, into: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(HERE), "archive", "--format=tar", rev, "src"],
                             capture_output=True, check=True).stdout
    into.mkdir(parents=True, exist_ok=True)
    path = into / "archive.tar"
    path.write_bytes(archive)
    with tarfile.open(path) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def run_once(src: Path, mode: str, command: list[str]) -> tuple[float, float]:
    env = {**os.environ, "PYTHONPATH": str(src), "CONNGUARD_DATA_DIR": tempfile.gettempdir()}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", RUN, mode, *command], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} {' '.join(command)} failed: {proc.stderr.strip()[-500:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def in_process(path: Path) -> dict[str, float]:
    from connguard.model.state import _StateLoader, parse_state

    text = path.read_text()
    out = {}
    for name, loader in (("parse, pure-Python", yaml.SafeLoader), ("parse, libyaml", getattr(yaml, "CSafeLoader", None)),
                         ("parse, libyaml + duplicate-key check (connguard)", _StateLoader)):
        if loader is None:
            continue
        started = time.perf_counter()
        data = yaml.load(text, Loader=loader)  # noqa: S506 - safe loaders only
        out[name] = time.perf_counter() - started
    started = time.perf_counter()
    parse_state(data)
    out["validation (pydantic)"] = time.perf_counter() - started
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--ports", type=int, default=10_000)
    ap.add_argument("--bans", type=int, default=100_000)
    ap.add_argument("--baseline", default="main", help="git revision whose tree is the 'before' (default main)")
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cgparse") as tmp:
        tmpdir = Path(tmp)
        files = {f"{args.ports:,} ports": tmpdir / "ports.yaml", f"{args.bans:,} bans": tmpdir / "bans.yaml"}
        # apply --dry-run of the ports file; only the load of the bans file: compiling 100,000
        # state-file bans is quadratic in the host-wide prefixes (compiler.dispatch.ban_elements)
        # and takes far longer than parsing them
        commands = {files[f"{args.ports:,} ports"]: ["apply", "--dry-run"], files[f"{args.bans:,} bans"]: ["load"]}
        docs = [ports_state(args.ports), bans_state(args.bans)]
        for path, doc in zip(files.values(), docs):
            path.write_text(yaml.dump(doc, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper), sort_keys=False))
        variants = {"baseline": (export_tree(args.baseline, tmpdir / "base"), "c"), "pure": (HERE / "src", "pure"),
                    "libyaml": (HERE / "src", "c")}
        base_rev = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", args.baseline],
                                  capture_output=True, text=True, check=True).stdout.strip()
        head_rev = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
                                  capture_output=True, text=True, check=True).stdout.strip()
        print(f"baseline = {args.baseline} ({base_rev}), this tree = {head_rev}; {args.repeat} runs each, interleaved")
        print(f"{'whole process':42} {'variant':9} {'wall p50':>9} {'wall min':>9} {'cpu p50':>9}")
        for label, path in files.items():
            cmd = commands[path]
            command = [cmd[0], str(path), *cmd[1:]]
            label = f"{' '.join(cmd)} {label}"
            runs: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}
            for _ in range(args.repeat):
                for v, (src, mode) in variants.items():
                    runs[v].append(run_once(src, mode, command))
            med = {}
            for v, samples in runs.items():
                walls, cpus = [w for w, _ in samples], [c for _, c in samples]
                med[v] = (statistics.median(walls), statistics.median(cpus))
                size = f"{path.stat().st_size / 1e6:.1f} MB"
                print(f"{label + ' (' + size + ')':42} {v:9} {med[v][0]:8.2f}s {min(walls):8.2f}s {med[v][1]:8.2f}s")
            print(f"{'':42} {'ratio':9} {med['baseline'][0] / med['libyaml'][0]:8.2f}x {'':9} "
                  f"{med['baseline'][1] / med['libyaml'][1]:8.2f}x   (baseline / libyaml)")
        print()
        print(f"{'in process, this tree (s)':50} " + "  ".join(f"{k:>14}" for k in files))
        rows = {k: in_process(p) for k, p in files.items()}
        for step in rows[next(iter(rows))]:
            print(f"{step:50} " + "  ".join(f"{rows[k][step]:13.2f}s" for k in files))
    print(f"\n{time.monotonic() - t0:.0f} s; load average (1 min) {load0:.2f} before, {os.getloadavg()[0]:.2f} after, "
          f"on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
