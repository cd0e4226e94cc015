"""The agent's own metrics: on the ``/metrics`` of ``connguard up``'s server, and on
``connguard agent --metrics-listen ADDR:PORT`` (``serve``: standalone or server mode).

The server's report metrics say what agents told it; these say how this host's agent loop
itself is doing, and are there even while it cannot reach the server (same process). They read
only what the agent publishes for its reporter (``Reconciler.last_apply``,
``apply_errors_total``; ``Reporter.queue``, ``online``, ``sent_total``): the scrape reads
counters and lengths, and the apply histogram is fed by ``sample()``, which ``up``'s main loop
calls twice a second (the reconciler applies at most once per pass, one second by default, and
stamps each apply, so no apply is missed or counted twice).
"""

from __future__ import annotations

import threading
from typing import Any, Iterator

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

APPLY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class AgentMetrics(Collector):
    def __init__(self, registry: CollectorRegistry, agent: Any, host: str):
        self.agent, self.host = agent, host
        self.apply = Histogram("connguard_agent_apply_seconds",
                               "Duration of the agent's applies that changed the kernel (delta or full)",
                               ["host"], buckets=APPLY_BUCKETS, registry=registry)
        self._last_at: Any = None
        registry.register(self)

    def sample(self) -> None:
        last = self.agent.reconciler.last_apply
        if last and last.get("at") != self._last_at:
            self._last_at = last.get("at")
            self.apply.labels(self.host).observe(float(last.get("seconds") or 0.0))

    def collect(self) -> Iterator[Any]:
        rec, rep = self.agent.reconciler, self.agent.reporter
        h = [self.host]
        yield _one(CounterMetricFamily, "connguard_agent_apply_errors",
                   "Applies the kernel refused (the last good state stays enforced)", h, rec.apply_errors_total)
        yield _one(GaugeMetricFamily, "connguard_agent_enforcing",
                   "1 once the agent applied a state (it writes nothing before its first)", h,
                   1 if rec.applier.applied is not None else 0)
        if rep is None:  # standalone: no server, no reports
            return
        yield _one(GaugeMetricFamily, "connguard_agent_report_queue_length",
                   "Reports waiting on disk for the server", h, len(rep.queue))
        yield _one(CounterMetricFamily, "connguard_agent_report_queue_overflow",
                   "Reports dropped because the queue was full", h, rep.queue.overflow_total)
        yield _one(CounterMetricFamily, "connguard_agent_reports_sent",
                   "Reports the server accepted", h, rep.sent_total)
        yield _one(GaugeMetricFamily, "connguard_agent_server_reachable",
                   "1 when the agent's last report reached the server", h, 1 if rep.online else 0)


class _Agent:
    def __init__(self, reconciler: Any, reporter: Any):
        self.reconciler, self.reporter = reconciler, reporter


def serve(listen: str, *, reconciler: Any, reporter: Any | None, host: str, stop: threading.Event) -> tuple[str, int]:
    """Serve the agent loop's metrics on ``listen`` (``ADDR:PORT``; port 0 picks one) in
    threads of their own, until the process exits; returns the address bound. The apply
    histogram is sampled twice a second (an apply is stamped, so none is counted twice)."""
    addr, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--metrics-listen: expected ADDR:PORT, got {listen!r}")
    registry = CollectorRegistry()
    metrics = AgentMetrics(registry, _Agent(reconciler, reporter), host)
    server, _ = start_http_server(int(port), addr.strip("[]") or "127.0.0.1", registry=registry)

    def sample() -> None:
        while not stop.wait(0.5):
            metrics.sample()
        server.shutdown()

    threading.Thread(target=sample, name="connguard-metrics", daemon=True).start()
    bound = server.server_address
    return bound[0], bound[1]


def _one(kind: type, name: str, help_: str, labels: list[str], value: float) -> Any:
    family = kind(name, help_, labels=["host"])
    family.add_metric(labels, value)
    return family
