"""The status file: what the last apply on this host (or namespace) enforces, for
``connguard status``. The kernel has the counters and bans; this file has the names."""

from __future__ import annotations

import json
import os
from pathlib import Path

from connguard.compiler.ruleset import Ruleset
from connguard.model import HostState


def write_status(workdir: Path, *, state: HostState, ruleset: Ruleset, source: str, netns: str | None,
                 now: float, last_apply: dict | None, last_error: str | None, pid: int | None) -> None:
    status = {
        "pid": pid, "state_file": source, "netns": netns, "updated_at": now,
        "last_apply": last_apply, "last_error": last_error,
        "ports": ruleset.port_policy, "hit_sets": ruleset.hit_sets,
        "policies": {p.name: {"enforcement": p.enforcement,
                              "rules": [r.model_dump(exclude_none=True) for r in p.rules]}
                     for p in state.policies},
    }
    workdir.mkdir(parents=True, exist_ok=True)
    tmp = workdir / ".status.json.tmp"
    tmp.write_text(json.dumps(status, indent=1))
    os.replace(tmp, workdir / "status.json")
