"""Prometheus metrics aggregated from agent reports, read from the database at scrape time
(so every server process behind a load balancer answers the same figures, and nothing is kept
in memory between scrapes).

Labels are bounded by the objects the operator created (hosts, ports, rules); no label ever
carries a remote address. Counters are the server-side totals of ``port_counters``, which
survive agent restarts (db/models.py ``PortCounter``).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Iterator

from fastapi import FastAPI
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session, sessionmaker

from connguard.db.models import Agent, Ban, Port, PortCounter, PortObservation, QosRule, utcnow
from connguard.db.services.common import aware
from connguard.db.services.hosts import AGENT_DOWN_SECONDS

RULE_LABELS = ["host", "port_id", "rule_id", "rule_type"]
RULE_COUNTERS = {
    "admitted": "Connections a rule admitted on a port",
    "refused": "Connections a rule refused on a port",
    "would_refuse": "Connections a monitor-mode rule would have refused on a port",
    "set_full": "Connections admitted because a rule's meter set was full (fail-open bypass)",
}


class ReportCollector(Collector):
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions

    def collect(self) -> Iterator[Any]:
        with self.sessions() as session:
            try:
                yield from self._rules(session)
                yield from self._hosts(session)
                yield from self._bans(session)
            finally:
                session.rollback()

    def _rules(self, session: Session) -> Iterator[Any]:
        families = {name: CounterMetricFamily(f"connguard_port_{name}", help_, labels=RULE_LABELS)
                    for name, help_ in RULE_COUNTERS.items()}
        set_full_by_host: dict[str, int] = {}
        rows = session.execute(
            select(Port.host_id, PortCounter, QosRule.type)
            .join(Port, Port.id == PortCounter.port_id)
            .outerjoin(QosRule, QosRule.id == PortCounter.rule_id)
            .order_by(Port.host_id, PortCounter.port_id, PortCounter.rule_id)
        )
        for host, c, rule_type in rows:
            labels = [host or "", c.port_id, c.rule_id, rule_type or "unknown"]
            for name, family in families.items():
                family.add_metric(labels, getattr(c, name))
            set_full_by_host[host or ""] = set_full_by_host.get(host or "", 0) + c.set_full
        yield from families.values()
        offenders = GaugeMetricFamily("connguard_port_offenders", "Offenders the agent lists for a port (bounded)",
                                      labels=["host", "port_id"])
        for host, port_id, value in session.execute(
                select(Port.host_id, PortObservation.port_id, PortObservation.offenders)
                .join(Port, Port.id == PortObservation.port_id).order_by(PortObservation.port_id)):
            offenders.add_metric([host or "", port_id], len(value or []))
        yield offenders
        bypass = CounterMetricFamily("connguard_host_set_full_bypasses",
                                     "Connections admitted on a host because a meter set was full", labels=["host"])
        for host, total in sorted(set_full_by_host.items()):
            bypass.add_metric([host], total)
        yield bypass

    def _hosts(self, session: Session) -> Iterator[Any]:
        now = utcnow()
        alive_since = now - timedelta(seconds=AGENT_DOWN_SECONDS)
        up = GaugeMetricFamily("connguard_agent_up", "1 while a host's agent reports (heartbeat within 75 s)",
                               labels=["host"])
        latency = GaugeMetricFamily("connguard_host_apply_latency_seconds", "Duration of the agent's last apply",
                                    labels=["host"])
        errors = CounterMetricFamily("connguard_host_apply_errors", "Applies the kernel refused, since the agent "
                                     "started", labels=["host"])
        overflow = CounterMetricFamily("connguard_host_report_queue_overflow",
                                       "Reports the agent dropped because its offline queue was full", labels=["host"])
        ct = GaugeMetricFamily("connguard_host_conntrack_entries", "Conntrack entries on the host", labels=["host"])
        ct_max = GaugeMetricFamily("connguard_host_conntrack_entries_max", "The host's conntrack table size",
                                   labels=["host"])
        alive = 0
        for a in session.scalars(select(Agent).order_by(Agent.host)):
            beat = aware(a.heartbeat_timestamp)  # SQLite gives naive UTC
            is_up = beat is not None and beat > alive_since
            alive += is_up
            up.add_metric([a.host], 1 if is_up else 0)
            errors.add_metric([a.host], a.apply_errors_total)
            overflow.add_metric([a.host], a.queue_overflow_total)
            if a.apply_latency_seconds is not None:
                latency.add_metric([a.host], a.apply_latency_seconds)
            if a.conntrack_count is not None:
                ct.add_metric([a.host], a.conntrack_count)
            if a.conntrack_max is not None:
                ct_max.add_metric([a.host], a.conntrack_max)
        yield GaugeMetricFamily("connguard_agents_alive", "Agents whose heartbeat is within 75 s", value=alive)
        yield from (up, latency, errors, overflow, ct, ct_max)

    def _bans(self, session: Session) -> Iterator[Any]:
        family = GaugeMetricFamily("connguard_bans_active", "Active bans", labels=["scope", "origin"])
        rows = session.execute(
            select(Ban.scope, Ban.origin, func.count())
            .where(or_(Ban.expires_at.is_(None), Ban.expires_at > utcnow()))
            .group_by(Ban.scope, Ban.origin).order_by(Ban.scope, Ban.origin))
        for scope, origin, n in rows:
            family.add_metric([scope, origin], n)
        yield family


def install(app: FastAPI) -> None:
    app.state.metrics_registry.register(ReportCollector(app.state.sessions))
