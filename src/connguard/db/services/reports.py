"""Agent reports: fold one typed report (``report_schema.Report``) into the server's view of a
host: the agent's heartbeat and usage, port statuses, per-(port, rule) counters, offenders,
detected bans (shared ones reach every host of their scope) and discovered ports.

Events come from here, derived rather than relayed: ``port_error``/``port_recovered`` on a
status transition, ``limit_exceeded`` once per port and rule per report whose counters moved
(count = the connections refused, or would-be refused in monitor mode, since the last report),
``ban`` for each new detected ban (``security.record_detected_ban``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from connguard.db.models import Agent, Event, Port, PortCounter, PortObservation, QosRule, new_id, utcnow
from connguard.db.services.common import Caller, host_revision, touch_hosts, validate
from connguard.db.services.hosts import agent_public, check_host_access
from connguard.db.services.policies import EFFECTIVE_POLICY_ID
from connguard.db.services.report_schema import MAX_INTERFACES, DetectedBan, Interface, PortReport, Report, Slice
from connguard.db.services.audit import record_event
from connguard.db.services.security import record_detected_ban
from connguard.model.rules import RULE_TYPES

DISCOVERED = "connguard:discovered"  # device_owner of ports the server created from a report
COUNTERS = ("admitted", "refused", "would_refuse", "set_full")
_CHUNK = 500  # ids per IN (...) list


def report(session: Session, *, caller: Caller, host: str, body: dict[str, Any]) -> dict[str, Any]:
    check_host_access(caller, host)
    data = validate(Report, body)
    now = utcnow()
    agent = _heartbeat(session, host=host, data=data, now=now)
    ports, total = _host_ports(session, host=host, data=data)
    replace = _replaced(data)
    ignored = sorted({pr.port_id for pr in data.ports if pr.port_id not in ports}
                     | {b.port_id for b in data.bans if b.port_id not in ports})
    reported = [pr for pr in data.ports if pr.port_id in ports]
    rule_types = _rule_types(session, {c.rule_id for pr in reported for c in pr.counters})
    for pr in reported:
        _status(session, port=ports[pr.port_id], pr=pr, host=host, caller=caller)
    _counters(session, ports=ports, reported=reported, replace=replace, rule_types=rule_types, host=host, now=now)
    _offenders(session, ports=ports, reported=reported, replace=replace, now=now)
    _bans(session, ports=ports, bans=[b for b in data.bans if b.port_id in ports], host=host, now=now,
          caller=caller)
    refused: list[str] = []
    if data.interfaces is not None or data.interfaces_gone:
        vanish = None if not data.full else Slice() if data.part is None else data.part.interfaces
        refused = _discover(session, caller=caller, host=host, ports=ports, total=total, interfaces=data.interfaces,
                            gone=data.interfaces_gone, vanish=vanish)
    session.flush()
    # ``revision`` lets the agent see at once that the report changed its desired state
    # (a discovered port, a shared ban); ``ignored_port_ids`` names ports no longer on this
    # host (deleted or moved while the agent reported), whose parts were skipped;
    # ``ignored_interfaces`` interfaces not made ports because the host is at its bound.
    return {"agent": agent_public(agent), "revision": host_revision(session, host=host),
            "ignored_port_ids": ignored, "ignored_interfaces": refused}


def _replaced(data: Report) -> Slice | None:
    """The port ids whose counters and offenders the report replaces: none for a delta, all
    for a whole full report, its slice for one part of a split one."""
    if not data.full:
        return None
    return Slice() if data.part is None else data.part.ports


def _host_ports(session: Session, *, host: str, data: Report) -> tuple[dict[str, Port], int | None]:
    """The host's ports the report needs, and how many the host has (when read): all of them
    for a whole full report or a delta naming interfaces (discovery matches by name); for one
    part of a split full report, those of its slices and those it names; else only those it
    names, so a small delta from a 10,000-port host reads a few rows."""
    q = select(Port).where(Port.host_id == host)
    named = {pr.port_id for pr in data.ports} | {b.port_id for b in data.bans}
    if data.part is None and (data.full or data.interfaces is not None or data.interfaces_gone):
        out = {p.id: p for p in session.scalars(q)}
        return out, len(out)
    total = None
    if data.part is not None:  # ids and names only (cheap), then the rows of the slices
        pairs = session.execute(select(Port.id, Port.interface_name).where(Port.host_id == host)).all()
        names = {i.name for i in data.interfaces or []} | set(data.interfaces_gone)
        ps, isl = data.part.ports, data.part.interfaces
        named |= {pid for pid, name in pairs if (ps is not None and pid in ps) or name in names
                  or (isl is not None and name is not None and name in isl)}
        total = len(pairs)
    ids = sorted(named)
    out: dict[str, Port] = {}
    for i in range(0, len(ids), _CHUNK):
        out.update((p.id, p) for p in session.scalars(q.where(Port.id.in_(ids[i:i + _CHUNK]))))
    return out, total


def _heartbeat(session: Session, *, host: str, data: Report, now: datetime) -> Agent:
    agent = session.scalars(select(Agent).where(Agent.host == host)).first()
    if agent is None:
        agent = Agent(host=host)
        session.add(agent)
    hb = data.heartbeat
    agent.started_at, agent.version, agent.heartbeat_timestamp = hb.started_at, hb.version, now
    agent.configurations = dict(hb.configurations)
    if data.conntrack is not None:
        agent.conntrack_count, agent.conntrack_max = data.conntrack.count, data.conntrack.max
    if data.apply is not None:
        agent.apply_latency_seconds = data.apply.latency_seconds
        agent.apply_errors_total, agent.last_apply_error = data.apply.errors_total, data.apply.last_error
    if data.queue is not None:
        agent.queue_overflow_total = data.queue.overflow_total
    if data.full and (data.part is None or data.part.index == data.part.count - 1):
        agent.last_full_report_at = now
    return agent


def _rule_types(session: Session, rule_ids: set[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    ids = sorted(rule_ids)
    for i in range(0, len(ids), _CHUNK):
        q = select(QosRule.id, QosRule.type).where(QosRule.id.in_(ids[i:i + _CHUNK]))
        out.update((rid, kind) for rid, kind in session.execute(q))
    return out


def _status(session: Session, *, port: Port, pr: PortReport, host: str, caller: Caller) -> None:
    if pr.status is None:
        return
    message = pr.status_message if pr.status == "ERROR" else ""
    if (port.status, port.status_message) == (pr.status, message):
        return  # unchanged: no write, no event (a full report repeats every status)
    was = port.status
    port.status, port.status_message = pr.status, message
    if pr.status == "ERROR":
        record_event(session, event_type="port_error", project_id=port.project_id, port_id=port.id, host=host,
                     caller=caller, message=message or "the agent could not apply this port's rules")
    elif was == "ERROR":
        record_event(session, event_type="port_recovered", project_id=port.project_id, port_id=port.id, host=host,
                     caller=caller, message="the port's rules are applied again")


_COLS = (*COUNTERS, *(f"last_{n}" for n in COUNTERS))


def _existing_counters(session: Session, port_ids: list[str]) -> dict[tuple[str, str], dict[str, int]]:
    out: dict[tuple[str, str], dict[str, int]] = {}
    cols = [getattr(PortCounter, c) for c in _COLS]
    for i in range(0, len(port_ids), _CHUNK):
        q = (select(PortCounter.port_id, PortCounter.rule_id, *cols)
             .where(PortCounter.port_id.in_(port_ids[i:i + _CHUNK])))
        for port_id, rule_id, *values in session.execute(q):
            out[(port_id, rule_id)] = dict(zip(_COLS, values))
    return out


def _counters(session: Session, *, ports: dict[str, Port], reported: list[PortReport], replace: Slice | None,
              rule_types: dict[str, str], host: str, now: datetime) -> None:
    """Fold raw totals into server totals: a raw value below the last one means the agent
    restarted (its counters began again at 0), so all of it is new. Rows and events are
    written in bulk (a full report of a large host touches tens of thousands)."""
    ids = {pr.port_id for pr in reported}
    if replace is not None:
        ids |= {pid for pid in ports if pid in replace}
    existing = _existing_counters(session, sorted(ids))
    seen: set[tuple[str, str]] = set()
    inserts: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for pr in reported:
        port = ports[pr.port_id]
        for c in pr.counters:
            key = (pr.port_id, c.rule_id)
            if key in seen:
                continue  # a rule listed twice for a port: the first counts
            seen.add(key)
            old = existing.get(key)
            row = dict(old) if old is not None else dict.fromkeys(_COLS, 0)
            delta = {}
            for name in COUNTERS:
                raw, last = getattr(c, name), row[f"last_{name}"]
                delta[name] = raw - last if raw >= last else raw
                row[name] += delta[name]
                row[f"last_{name}"] = raw
            if old is None:
                inserts.append({"port_id": pr.port_id, "rule_id": c.rule_id, **row, "updated_at": now})
            elif row != old:
                updates.append({"port_id": pr.port_id, "rule_id": c.rule_id, **row, "updated_at": now})
            if delta["refused"] or delta["would_refuse"]:
                events.append(_exceeded(port=port, rule_id=c.rule_id, rule_type=rule_types.get(c.rule_id), host=host,
                                        refused=delta["refused"], would=delta["would_refuse"], now=now))
    table = PortCounter.__table__
    if inserts:  # Core executemany: the ORM's bulk paths cost several times more per row
        session.execute(insert(table), inserts)
    if updates:
        values = {c: bindparam(f"v_{c}") for c in (*_COLS, "updated_at")}
        stmt = update(table).where(table.c.port_id == bindparam("k_port"), table.c.rule_id == bindparam("k_rule"))
        session.execute(stmt.values(values), [{"k_port": u["port_id"], "k_rule": u["rule_id"],
                                              **{f"v_{c}": u[c] for c in values}} for u in updates])
    if events:
        session.execute(insert(Event.__table__), events)
    if replace is not None:  # a full report replaces the host's counters: rules it no longer has go
        for port_id, rule_id in sorted(k for k in existing.keys() - seen if k[0] in replace):
            session.execute(delete(PortCounter).where(PortCounter.port_id == port_id, PortCounter.rule_id == rule_id))


def _exceeded(*, port: Port, rule_id: str, rule_type: str | None, host: str, refused: int, would: int,
              now: datetime) -> dict[str, Any]:
    what = rule_type or "rule"
    parts = [f"refused {refused}"] if refused else []
    if would:
        parts.append(f"would have refused {would} (monitor)")
    return {"id": new_id(), "event_type": "limit_exceeded", "project_id": port.project_id, "port_id": port.id,
            "rule_id": rule_id, "host": host, "ip_address": None, "count": refused + would, "created_at": now,
            "message": f"{what} {rule_id}: {' and '.join(parts)} since the last report"}


def _offenders(session: Session, *, ports: dict[str, Port], reported: list[PortReport], replace: Slice | None,
               now: datetime) -> None:
    given = {pr.port_id: pr.offenders for pr in reported if pr.offenders is not None}
    if replace is not None:
        gone = [pid for pid in ports if pid in replace and pid not in given]
        for i in range(0, len(gone), _CHUNK):
            session.execute(delete(PortObservation).where(PortObservation.port_id.in_(gone[i:i + _CHUNK])))
    # read in chunks and written in bulk: one get() per port (each flushing the session)
    # cost about 5 ms a port, most of a full report's time on a large host
    ids = sorted(given)
    old: dict[str, Any] = {}
    for i in range(0, len(ids), _CHUNK):
        q = select(PortObservation.port_id, PortObservation.offenders).where(PortObservation.port_id.in_(ids[i:i + _CHUNK]))
        old.update(session.execute(q).all())
    inserts, updates = [], []
    for port_id in ids:
        value = [o.model_dump(mode="json") for o in given[port_id]]
        if port_id not in old:
            inserts.append({"port_id": port_id, "offenders": value, "updated_at": now})
        elif old[port_id] != value:
            updates.append({"k_port": port_id, "v_offenders": value, "v_updated_at": now})
    table = PortObservation.__table__
    if inserts:
        session.execute(insert(table), inserts)
    if updates:
        session.execute(update(table).where(table.c.port_id == bindparam("k_port"))
                        .values(offenders=bindparam("v_offenders"), updated_at=bindparam("v_updated_at")), updates)


def _rule_of_ban(session: Session, *, port: Port, rule_id: str | None) -> Any:
    """The brute-force rule that made a ban, when it is a rule of the port's effective policy;
    None otherwise. Its ``share`` and ``ban_for``, not the report's word, decide how far the
    ban reaches and how long it lasts: a host's token cannot ban a source cloud-wide unless
    the operator's rule says so."""
    row = session.get(QosRule, rule_id) if rule_id else None
    if row is None or row.type != "brute_force":
        return None
    if row.policy_id != session.scalar(select(EFFECTIVE_POLICY_ID).where(Port.id == port.id)):
        return None
    return RULE_TYPES[row.type].model_validate(row.params)


def _bans(session: Session, *, ports: dict[str, Port], bans: list[DetectedBan], host: str, now: datetime,
          caller: Caller) -> None:
    for b in bans:
        port = ports[b.port_id]
        rule = _rule_of_ban(session, port=port, rule_id=b.rule_id)
        record_detected_ban(session, host=host, port=port, ip_address=b.ip_address,
                            share=rule.share if rule is not None else "port",
                            banned_at=b.banned_at, expires_at=b.expires_at, offence_count=b.offence_count,
                            reason=b.reason, ban_for=rule.ban_for if rule is not None else None, now=now,
                            caller=caller)


def _discover(session: Session, *, caller: Caller, host: str, ports: dict[str, Port], total: int | None,
              interfaces: list[Interface] | None, gone: list[str], vanish: Slice | None) -> list[str]:
    """Ports for the interfaces the agent found: unknown ones are created in the reporting
    token's project (so its default policy, else the cloud default, protects them with no
    further call); discovered ports whose interface vanished go DOWN, keeping their history.
    A host holds at most ``MAX_INTERFACES`` ports: names beyond are not created, and returned.
    ``vanish``: the names a full report (or its part) lists whole: discovered ports named in it
    and not listed go DOWN."""
    by_name = {p.interface_name: p for p in ports.values()}
    total = len(by_name) if total is None else total
    refused: list[str] = []
    listed = {i.name for i in interfaces or []}
    changed = False
    for iface in interfaces or []:
        status = "DOWN" if iface.state == "DOWN" else "ACTIVE"
        port = by_name.get(iface.name)
        if port is None and total >= MAX_INTERFACES:
            refused.append(iface.name)
            continue
        if port is None:
            port = Port(id=new_id(), project_id=caller.project_id, host_id=host, name=iface.name,
                        interface_name=iface.name,
                        device_owner=DISCOVERED, fixed_ips=list(iface.addresses), status=status)
            session.add(port)
            ports[port.id] = by_name[iface.name] = port
            total += 1
            changed = True
        elif port.device_owner == DISCOVERED:
            if list(port.fixed_ips or []) != list(iface.addresses):
                port.fixed_ips, changed = list(iface.addresses), True
            if port.status != status and port.status != "ERROR":
                port.status = status
    vanished = set(gone)
    if vanish is not None and interfaces is not None:
        vanished |= {n for n in by_name if n is not None and n in vanish and n not in listed}
    for name in sorted(vanished):
        port = by_name.get(name)
        if port is not None and port.device_owner == DISCOVERED and port.status != "DOWN":
            port.status, port.status_message = "DOWN", "the interface is gone from the host"
    if changed:
        session.flush()
        touch_hosts(session, hosts=[host])
    return refused
