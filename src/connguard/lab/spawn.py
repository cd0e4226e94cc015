"""Long-running processes of a lab (a host's agent, a server): started, recorded, always reaped.

Every process started through :func:`spawn` or :func:`spawn_detached` is recorded on disk in
``/run/connguard/lab/<prefix>.procs/<pid>.json`` with its kernel start time, so that removing the
lab (``Lab.down()``, ``connguard lab down`` from another process, ``lab down --all``) ends it
even when the Python object that started it is gone. The start time guards against a recycled
pid: a record whose pid now belongs to another process is dropped, never signalled.

Each process leads its own session (process group), and reaping signals the group, so helpers
it started (``nft``, ``conntrack``) end with it. Processes started inside a lab namespace would
die with the namespace anyway; the record matters for those that run in the caller's namespace
(an agent given ``--netns`` that talks to a server on loopback).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence

from connguard.exceptions import LabError
from connguard.lab import netns as nsx
from connguard.lab.procs import Proc

STATE_DIR = "/run/connguard/lab"


def procs_dir(prefix: str) -> str:
    return os.path.join(STATE_DIR, f"{prefix}.procs")


def _start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks); None when gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name may contain spaces and ')'
    if fields[0] == "Z":
        return None
    return fields[19]


def _record(prefix: str, pid: int, *, name: str, netns: str | None, argv: Sequence[str],
            log: str | None) -> None:
    start = _start_time(pid)
    if start is None:
        return  # already gone
    os.makedirs(procs_dir(prefix), exist_ok=True)
    path = os.path.join(procs_dir(prefix), f"{pid}.json")
    with open(path + ".tmp", "w") as fh:
        json.dump({"pid": pid, "start": start, "name": name, "netns": netns,
                   "argv": list(argv), "log": log}, fh)
    os.replace(path + ".tmp", path)


def _forget(prefix: str, pid: int) -> None:
    try:
        os.unlink(os.path.join(procs_dir(prefix), f"{pid}.json"))
    except FileNotFoundError:
        pass


def _argv(netns: str | None, argv: Sequence[str]) -> list[str]:
    if not argv:
        raise LabError("spawn: empty command")
    return nsx.ns_argv(netns, argv) if netns else list(argv)


class LabProcess(Proc):
    """A :class:`Proc` (stdout lines with deadlines, stderr tail) recorded in its lab.

    ``stop()`` sends SIGTERM to its process group, waits ``grace`` seconds, then SIGKILL.
    """

    def __init__(self, prefix: str, argv: Sequence[str], *, name: str, netns: str | None,
                 env: dict[str, str] | None = None):
        self.prefix, self.name, self.netns = prefix, name, netns
        super().__init__(_argv(netns, argv), what=f"{name} in {netns or 'the caller namespace'}",
                         env=env, new_session=True)
        _record(prefix, self.proc.pid, name=name, netns=netns, argv=argv, log=None)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, grace: float = 3.0) -> int | None:
        try:
            return super().stop(grace)
        finally:
            _forget(self.prefix, self.proc.pid)


def spawn(prefix: str, argv: Sequence[str], *, name: str, netns: str | None,
          env: dict[str, str] | None = None) -> LabProcess:
    """Start ``argv`` inside ``netns`` (None: in the caller's namespace), piped to this process."""
    return LabProcess(prefix, argv, name=name, netns=netns, env=env)


def spawn_detached(prefix: str, argv: Sequence[str], *, name: str, netns: str | None) -> int:
    """Start ``argv`` with its output in ``<prefix>.procs/<name>.log``; it outlives the caller
    (``connguard lab up --agent``) and is reaped when the lab is removed. Returns its pid."""
    os.makedirs(procs_dir(prefix), exist_ok=True)
    log = os.path.join(procs_dir(prefix), f"{name}.log")
    with open(log, "ab") as out:
        try:
            proc = subprocess.Popen(_argv(netns, argv), stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env=nsx.child_env(),
                                    start_new_session=True)
        except FileNotFoundError as exc:
            raise LabError(f"cannot start {argv[0]}: {exc}") from exc
    _record(prefix, proc.pid, name=name, netns=netns, argv=argv, log=log)
    time.sleep(0.2)
    if proc.poll() is not None:  # a command that fails at once is an error of `lab up`
        _forget(prefix, proc.pid)
        with open(log, errors="replace") as fh:
            tail = [ln for ln in fh.read().splitlines() if ln.strip()][-1:]
        raise LabError(f"{name} ({' '.join(argv)}) exited with status {proc.returncode}"
                       + (f": {tail[0]}" if tail else ""))
    return proc.pid


def recorded(prefix: str) -> list[dict]:
    """The lab's recorded processes that still run (stale records are dropped)."""
    out = []
    folder = procs_dir(prefix)
    if not os.path.isdir(folder):
        return out
    for entry in sorted(os.listdir(folder)):
        if not entry.endswith(".json"):
            continue
        try:
            with open(os.path.join(folder, entry)) as fh:
                rec = json.load(fh)
            pid = int(rec["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if _start_time(pid) == rec.get("start"):
            out.append(rec)
        else:
            _forget(prefix, pid)
    return out


def _signal(pid: int, sig: int) -> None:
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def reap(prefix: str, grace: float = 3.0) -> list[dict]:
    """End every recorded process of the lab (SIGTERM, then SIGKILL after ``grace`` s) and
    remove the records and logs. Returns the records of the processes that were running."""
    running = recorded(prefix)
    for rec in running:
        _signal(rec["pid"], signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(_start_time(r["pid"]) == r["start"] for r in running):
        time.sleep(0.05)
    for rec in running:
        if _start_time(rec["pid"]) == rec["start"]:
            _signal(rec["pid"], signal.SIGKILL)
    shutil.rmtree(procs_dir(prefix), ignore_errors=True)
    return running
