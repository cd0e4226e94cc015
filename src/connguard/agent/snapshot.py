"""The server's host state (``GET connguard/hosts/{host}/state``) turned into the same frozen
``HostState`` a state file produces, through the same model (``parse_state``), so a rule means
the same thing on both paths; plus the ids the reporter needs.

Policies are named by a stable name derived from their id (``qos-<id>``: policy names are not
unique across projects, and renaming a policy must not rename its kernel sets). Bans do not go
through the compiler: they are the ban writer's (reconciler), with their absolute expiry.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from typing import Any

from connguard.agent.source import Desired, ServerBan
from connguard.exceptions import ValidationFailed
from connguard.model import parse_state

# fields the API adds to a rule; the rest is the model's
_API_RULE_FIELDS = {"id", "qos_policy_id", "revision_number", "created_at", "updated_at", "tenant_id", "project_id"}
DISCOVERED = "connguard:discovered"
_KEYS = ("host", "revision", "ports", "policies", "allowlist", "bans")


def policy_name(policy_id: str) -> str:
    return f"qos-{policy_id}"


def _epoch(value: str | None, where: str) -> float | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except (TypeError, ValueError):
        raise ValidationFailed([(where, f"not a timestamp: {value!r}")]) from None


def _one_source(ip: str) -> bool:
    net = ipaddress.ip_network(ip, strict=False)
    return net.prefixlen >= (32 if net.version == 4 else 64)


def from_host_state(body: Any, *, host: str) -> Desired:
    """Raises ValidationFailed naming the field for anything short of a complete, valid
    snapshot of ``host`` (a truncated answer lacks a key; a wrong type is refused)."""
    hs = body.get("host_state") if isinstance(body, dict) else None
    if not isinstance(hs, dict):
        raise ValidationFailed([("host_state", "required field is missing")])
    for key in _KEYS:
        if key not in hs:
            raise ValidationFailed([(f"host_state.{key}", "required field is missing (truncated snapshot?)")])
    if hs["host"] != host:
        raise ValidationFailed([("host_state.host", f"is {hs['host']!r}, this agent is {host!r}")])
    revision = hs["revision"]
    if not isinstance(revision, int) or isinstance(revision, bool) or revision < 0:
        raise ValidationFailed([("host_state.revision", f"not a revision: {revision!r}")])
    for key in _KEYS[2:]:
        if not isinstance(hs[key], list) or not all(isinstance(x, dict) for x in hs[key]):
            raise ValidationFailed([(f"host_state.{key}", "must be a list of objects")])
    try:
        return _convert(hs, revision)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ValidationFailed):
            raise
        raise ValidationFailed([("host_state", f"malformed: {exc!r}")]) from None


def _convert(hs: dict, revision: int) -> Desired:
    warnings: list[str] = []
    policies, rule_ids = [], {}
    for p in hs["policies"]:
        name = policy_name(p["id"])
        rules = []
        for i, r in enumerate(p["rules"]):
            rules.append({k: v for k, v in r.items() if k not in _API_RULE_FIELDS})
            rule_ids[(name, i)] = r["id"]
        policies.append({"name": name, "description": p.get("description") or "",
                         "enforcement": p.get("enforcement", "enforce"), "rules": rules})
    ports, port_ids, projects = [], {}, {}
    by_id = {}
    # A discovered port's addresses come from the host, not the operator: one that another
    # port already has is dropped from it (with a warning) rather than failing the snapshot.
    registered = {_ip_of(ip) for p in hs["ports"] if p.get("device_owner") != DISCOVERED
                  for ip in p.get("fixed_ips") or []}
    for port in hs["ports"]:
        pid = port.get("effective_qos_policy_id")
        ifname = port["interface_name"]
        fixed = port.get("fixed_ips") or []
        if port.get("device_owner") == DISCOVERED:
            keep = [ip for ip in fixed if _ip_of(ip) not in registered]
            if len(keep) != len(fixed):
                warnings.append(f"discovered port {ifname}: addresses of other ports left out "
                                f"({', '.join(sorted(set(map(_ip_of, fixed)) - set(map(_ip_of, keep))))})")
            fixed = keep
            registered |= {_ip_of(ip) for ip in keep}
        ports.append({"interface_name": ifname, "fixed_ips": fixed,
                      "policy": policy_name(pid) if pid else None, "name": (port.get("name") or "")[:255]})
        port_ids[ifname] = port["id"]
        projects.setdefault(port.get("project_id"), []).append(ifname)
        by_id[port["id"]] = ifname
    # The host-wide allowlist lets a remote past every port of the host: a project's entry is
    # enforced only when every port here is that project's, so one tenant cannot open another
    # tenant's ports.
    allow = []
    for a in hs["allowlist"]:
        owner = a.get("project_id")
        if owner is None or set(projects) == {owner}:
            allow.append({"remote_ip_prefix": a["remote_ip_prefix"], "description": (a.get("description") or "")[:1024]})
        else:
            warnings.append(f"allowlist entry {a.get('id')} ({a['remote_ip_prefix']}) of project {owner} "
                            "not enforced: this host also holds other projects' ports")
    state = parse_state({"policies": policies, "ports": ports, "allowlist": allow}, source="host_state")
    bans = []
    for i, b in enumerate(hs["bans"]):
        ip = b["ip_address"]
        ipaddress.ip_network(ip, strict=False)
        targets: list[tuple[str | None, str]] = []
        if b.get("port_id") in by_id and _one_source(ip):
            targets.append((by_id[b["port_id"]], _addr(ip)))
        scope = b.get("scope")
        if scope == "cloud":
            targets.append((None, _norm(ip)))
        elif scope == "project":
            mine = projects.get(b.get("project_id"), [])
            if len(projects) == 1 and mine:
                targets.append((None, _norm(ip)))  # every port here is that project's
            elif _one_source(ip):
                targets += [(ifname, _addr(ip)) for ifname in mine]
            elif mine:
                warnings.append(f"ban {b.get('id')} of prefix {ip} on project {b.get('project_id')} not enforced: "
                                "a port ban takes one address and this host holds other projects' ports")
        bans.append(ServerBan(b["id"], ip, tuple(dict.fromkeys(targets)), _epoch(b.get("expires_at"), f"host_state.bans[{i}].expires_at"),
                              int(b.get("offence_count") or 1), b.get("origin", "manual")))
    return Desired(state, "server snapshot", revision, port_ids, rule_ids, tuple(bans), tuple(warnings))


def _addr(ip: str) -> str:
    """A one-source ban as the port ban set keys it (IPv6: the /64's network address)."""
    net = ipaddress.ip_network(ip, strict=False)
    return str(net.network_address)


def _norm(ip: str) -> str:
    """A host-wide ban as the kernel lists it: a plain address for a full-length prefix."""
    net = ipaddress.ip_network(ip, strict=False)
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def _ip_of(entry: Any) -> Any:
    return entry.get("ip_address") if isinstance(entry, dict) else entry
