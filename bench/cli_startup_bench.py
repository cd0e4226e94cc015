"""Whole-process start-up time of ``connguard`` commands that do no work, before and after
lazy command loading, measured side by side in one run.

    python3 bench/cli_startup_bench.py [--before REV] [-n 15] [--status-netns NS]

``--status-netns NS`` also times ``connguard status --netns NS`` (root; NS an existing network
namespace, an empty one does: status then reads the kernel, finds no table and exits 3), the
command that reads the kernel, with its CPU time (user + system of the child process).

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
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _once(src: Path, args: list[str], ok: tuple[int, ...] = (0,)) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run."""
    env = dict(os.environ, PYTHONPATH=str(src))
    # Bytecode cached as an installed package has it (pip compiles on install): without it every
    # run would measure compiling the modules it imports.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    c0, t0 = _cpu(), time.perf_counter()
    out = subprocess.run([sys.executable, "-c", ENTRY, *args], env=env, capture_output=True, text=True)
    elapsed, cpu = time.perf_counter() - t0, _cpu() - c0
    if out.returncode not in ok:
        raise SystemExit(f"{' '.join(args)} exited {out.returncode} with {src}: {out.stderr.strip()}")
    return elapsed, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default="77d8982", help="git revision of the 'before' tree")
    ap.add_argument("-n", type=int, default=15, help="runs per command and tree")
    ap.add_argument("--status-netns", help="also time `connguard status --netns NS` (exit 3 on an empty namespace)")
    args = ap.parse_args()
    commands: list[tuple[list[str], tuple[int, ...]]] = [(c, (0,)) for c in COMMANDS]
    if args.status_netns:
        commands.append((["status", "--netns", args.status_netns], (0, 3)))
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"before": _tree(args.before, Path(tmp)), "after": ROOT / "src"}
        for src in trees.values():  # warm-up: write the bytecode caches
            for command, ok in commands:
                _once(src, command, ok)
        bare = []
        for _ in range(args.n):
            t0 = time.perf_counter()
            subprocess.run([sys.executable, "-c", "pass"], check=True)
            bare.append(time.perf_counter() - t0)
        print(f"connguard CLI start-up, whole process, median (min) of {args.n} runs; before = {args.before}, "
              f"after = working tree; bare `python3 -c pass`: {statistics.median(bare) * 1000:.0f} ms")
        print(f"{'command':<34} {'before ms':>14} {'after ms':>14} {'after/before':>13} "
              f"{'CPU before ms':>14} {'CPU after ms':>13}")
        for command, ok in commands:
            times: dict[str, list[float]] = {"before": [], "after": []}
            cpu: dict[str, list[float]] = {"before": [], "after": []}
            for _ in range(args.n):
                for name, src in trees.items():
                    wall, used = _once(src, command, ok)
                    times[name].append(wall)
                    cpu[name].append(used)
            b, a = statistics.median(times["before"]), statistics.median(times["after"])
            print(f"{'connguard ' + ' '.join(command):<34} {b * 1000:>7.0f} ({min(times['before']) * 1000:>4.0f}) "
                  f"{a * 1000:>7.0f} ({min(times['after']) * 1000:>4.0f}) {a / b:>13.2f} "
                  f"{statistics.median(cpu['before']) * 1000:>14.0f} {statistics.median(cpu['after']) * 1000:>13.0f}")


if __name__ == "__main__":
    main()
