"""What an apply changes, in the state file's terms: ports, policies, rules and bans added,
changed and removed, compared with the state the last apply (or agent) recorded in the status file.
Pure: two descriptions in, sentences out."""

from __future__ import annotations

from typing import Any


def summary(state: Any) -> dict[str, Any]:
    """The comparable description of a state, in the status file's shape."""
    return {"ports": {p.interface_name: (p.policy or state.default_policy) for p in state.ports
                      if (p.policy or state.default_policy)},
            "policies": {p.name: {"enforcement": p.enforcement,
                                  "rules": [r.model_dump(exclude_none=True) for r in p.rules]}
                         for p in state.policies},
            "bans": sorted([b.interface_name or "", b.ip_address] for b in state.bans)}


def _names(items: list[str]) -> str:
    return ", ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")


def describe(before: dict[str, Any] | None, after: dict[str, Any]) -> list[str]:
    """Lines such as ``ports: 1 added (tapdb1); 1 changed (tapweb1: web -> db)``; ``["unchanged"]``
    when nothing differs; with no ``before`` (a first apply here) everything counts as added."""
    before = before or {"ports": {}, "policies": {}}
    lines = []
    old_ports, new_ports = before.get("ports") or {}, after["ports"]
    added = sorted(set(new_ports) - set(old_ports))
    removed = sorted(set(old_ports) - set(new_ports))
    changed = sorted(p for p in set(new_ports) & set(old_ports) if new_ports[p] != old_ports[p])
    parts = []
    if added:
        parts.append(f"{len(added)} added ({_names(added)})")
    if changed:
        parts.append(f"{len(changed)} changed ({_names([f'{p}: {old_ports[p]} -> {new_ports[p]}' for p in changed])})")
    if removed:
        parts.append(f"{len(removed)} removed ({_names(removed)})")
    if parts:
        lines.append("ports: " + "; ".join(parts))
    old_pol, new_pol = before.get("policies") or {}, after["policies"]
    parts = []
    added = sorted(set(new_pol) - set(old_pol))
    removed = sorted(set(old_pol) - set(new_pol))
    if added:
        parts.append(f"{len(added)} added ({_names(added)})")
    changes = []
    for name in sorted(set(new_pol) & set(old_pol)):
        what = _policy_changes(old_pol[name], new_pol[name])
        if what:
            changes.append(f"{name}: {what}")
    if changes:
        parts.append(f"{len(changes)} changed ({'; '.join(changes)})")
    if removed:
        parts.append(f"{len(removed)} removed ({_names(removed)})")
    if parts:
        lines.append("policies: " + "; ".join(parts))
    old_bans = {tuple(b) for b in before.get("bans") or []}
    new_bans = {tuple(b) for b in after.get("bans") or []}
    parts = []

    def ban(b: tuple) -> str:
        return f"{b[1]} on {b[0]}" if b[0] else b[1]

    if new_bans - old_bans:
        parts.append(f"{len(new_bans - old_bans)} added ({_names([ban(b) for b in sorted(new_bans - old_bans)])})")
    if old_bans - new_bans:
        # a state-file ban is put in the kernel once and runs its course there
        gone = sorted(old_bans - new_bans)
        parts.append(f"{len(gone)} taken out of the file ({_names([ban(b) for b in gone])}; "
                     "in the kernel until it expires)")
    if parts:
        lines.append("bans: " + "; ".join(parts))
    return lines or ["unchanged"]


def _policy_changes(old: dict[str, Any], new: dict[str, Any]) -> str:
    out = []
    if old.get("enforcement") != new.get("enforcement"):
        out.append(f"enforcement {old.get('enforcement')} -> {new.get('enforcement')}")
    a, b = old.get("rules") or [], new.get("rules") or []
    changed = [i for i in range(min(len(a), len(b))) if a[i] != b[i]]
    rules = []
    if len(b) > len(a):
        rules.append(f"{len(b) - len(a)} added")
    if changed:
        rules.append(f"{len(changed)} changed ({', '.join(f'rules[{i}]' for i in changed)})")
    if len(a) > len(b):
        rules.append(f"{len(a) - len(b)} removed")
    if rules:
        out.append("rules " + ", ".join(rules))
    return ", ".join(out)
