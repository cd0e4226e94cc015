"""The status file: what the last apply on this host (or namespace) enforces, for
``connguard status``. The kernel has the counters and bans; this file has the names, and who
wrote it: an agent (its pid and the pid's start time, so that a dead agent whose pid was reused
is not taken for a running one) or ``connguard apply`` (no pid)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # `connguard status` reads this module: it must not import the model (pydantic)
    from connguard.compiler.ruleset import Ruleset
    from connguard.model import HostState


def process_start(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat (start time in clock ticks since boot); None when the
    process is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name may contain spaces and ')'
    return None if fields[0] in ("Z", "X") else fields[19]


def writer_running(status: dict) -> bool | None:
    """Whether the agent that wrote ``status`` still runs; None when no agent wrote it."""
    pid = status.get("pid")
    if not isinstance(pid, int):
        return None
    start = process_start(pid)
    return start is not None and start == status.get("pid_start", start)


# The file is rewritten every few seconds as a heartbeat, its bans (100,000 in a state file)
# change only with the state: they are serialised once per state, and spliced into the text.
_BANS_MARK = "\0bans\0"  # NUL: in no name, path or message of the file (all are validated text)
_bans_cache: list = [None, "[]"]  # [the state's bans tuple (kept: its id cannot be reused), JSON]


def _bans_json(bans) -> str:
    if _bans_cache[0] is not bans:
        _bans_cache[:] = [bans, json.dumps(sorted([b.interface_name or "", b.ip_address] for b in bans))]
    return _bans_cache[1]


def write_status(workdir: Path, *, state: HostState, ruleset: Ruleset, source: str, netns: str | None,
                 now: float, last_apply: dict | None, last_error: str | None, pid: int | None,
                 warnings: list[str] | None = None) -> None:
    status = {
        "pid": pid, "pid_start": process_start(pid) if pid else None,
        "state_file": source, "netns": netns, "updated_at": now,
        "last_apply": last_apply, "last_error": last_error, "warnings": list(warnings or ()),
        "ports": ruleset.port_policy, "hit_sets": ruleset.hit_sets,
        "bridged": ruleset.bridged,  # bridge a port is keyed by -> its tap (docs/dataplane.md)
        "bans": _BANS_MARK,  # the state file's (spliced in below)
        "policies": {p.name: {"enforcement": p.enforcement,
                              "rules": [r.model_dump(exclude_none=True) for r in p.rules]}
                     for p in state.policies},
    }
    workdir.mkdir(parents=True, exist_ok=True)
    tmp = workdir / ".status.json.tmp"
    tmp.write_text(json.dumps(status, indent=1).replace(json.dumps(_BANS_MARK), _bans_json(state.bans), 1))
    os.replace(tmp, workdir / "status.json")
