"""Whole-process start-up time of ``connguard`` commands that do no work, before and after
lazy command loading, measured side by side in one run.

    python3 bench/cli_startup_bench.py [--before REV] [-n 15]

"before" is the source tree of git revision REV (default: the commit before lazy loading,
77d8982, integ of the first round), extracted with ``git archive`` into a temporary directory;
"after" is this checkout's src/. Each command is run as a fresh interpreter,
``python3 -c 'from connguard.cli.main import main; main()' ARGS`` with PYTHONPATH pointing at
one tree, alternating before/after so that load on the machine hits both alike; the median of
n runs is reported (and the min, less sensitive to a loaded machine), and the median CPU time
(user + system) of the process, which a machine busy with other work inflates far less than
the wall-clock time. Bytecode is cached (``PYTHONDONTWRITEBYTECODE`` is dropped), as it is for
an installed package; a warm-up run of each tree writes it. Results go to docs/benchmarks.md,
section "CLI start-up".
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = (["--help"], ["policy", "list", "--help"], ["status", "--help"], ["apply", "--help"],
            ["ban", "delete", "--help"])
ENTRY = "from connguard.cli.main import main; main()"


def _tree(rev: str, into: Path) -> Path:
    blob = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "src"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _once(src: Path, args: list[str]) -> tuple[float, float]:
    """(wall-clock, CPU) seconds of one run."""
    env = dict(os.environ, PYTHONPATH=str(src))
    # Bytecode cached as an installed package has it (pip compiles on install): without it every
    # run would measure compiling the modules it imports.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    c0, t0 = _cpu(), time.perf_counter()
    out = subprocess.run([sys.executable, "-c", ENTRY, *args], env=env, capture_output=True, text=True)
    elapsed, cpu = time.perf_counter() - t0, _cpu() - c0
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed with {src}: {out.stderr.strip()}")
    return elapsed, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default="77d8982", help="git revision of the 'before' tree")
    ap.add_argument("-n", type=int, default=15, help="runs per command and tree")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"before": _tree(args.before, Path(tmp)), "after": ROOT / "src"}
        for src in trees.values():  # warm-up: write the bytecode caches
            for command in COMMANDS:
                _once(src, command)
        bare = []
        for _ in range(args.n):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], check=True)
            bare.append(time.perf_counter() - t0)
        print(f"connguard CLI start-up, whole process, median (min) of {args.n} runs; before = {args.before}, "
              f"after = working tree; bare `python3 -c pass`: {statistics.median(bare) * 1000:.0f} ms")
        print(f"{'command':<28} {'before ms':>14} {'after ms':>14} {'after/before':>13} "
              f"{'CPU before':>11} {'CPU after':>10}")
        for command in COMMANDS:
            times: dict[str, list[float]] = {"before": [], "after": []}
            cpus: dict[str, list[float]] = {"before": [], "after": []}
            for _ in range(args.n):
                for name, src in trees.items():
                    wall, cpu = _once(src, command)
                    times[name].append(wall)
                    cpus[name].append(cpu)
            b, a = statistics.median(times["before"]), statistics.median(times["after"])
            cb, ca = statistics.median(cpus["before"]), statistics.median(cpus["after"])
            print(f"{'connguard ' + ' '.join(command):<28} {b * 1000:>7.0f} ({min(times['before']) * 1000:>4.0f}) "
                  f"{a * 1000:>7.0f} ({min(times['after']) * 1000:>4.0f}) {a / b:>13.2f} "
                  f"{cb * 1000:>11.0f} {ca * 1000:>10.0f}")


if __name__ == "__main__":
    main()
