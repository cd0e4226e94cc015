"""The reporter: one typed report (db/services/report_schema.py) built from (state, ruleset,
observation) and sent on its own thread and schedule, so reporting never holds up enforcement.

Every ``interval`` (and at once when the kernel placed a ban) it sends a delta: ports whose
status or counters moved, new detected bans, interfaces that appeared, changed or vanished;
every ``full_every`` seconds, and after each (re)connect, a full report (the agent's whole
view). Counters are the kernel's hit counters (``h*`` sets, one element per port: refused, or
would-refuse in monitor mode) as monotonic totals; big dynamic sets are never listed. While the
server is unreachable, reports with content are queued on disk (report_queue.py) and delivered
in order after reconnect.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timezone
from typing import Callable

import connguard
from connguard.agent import hostinfo
from connguard.agent.reconciler import Detection, Reconciler
from connguard.agent.report_parts import split
from connguard.agent.report_queue import ReportQueue
from connguard.compiler.context import RuleContext
from connguard.model import BruteForceRule
from connguard.names import admitted_set, bypass_set, hit_set
from connguard.nft.observe import read_hits, read_offenders

log = logging.getLogger("connguard.agent.report")

MAX_BANS = 1000  # per report (the schema's bound)
MAX_OFFENDERS = 10  # per port (the schema's bound)
OFFENDER_READ = 2000  # elements read per offender set and report: an attacker grows those sets


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


class Delivery(Exception):
    """The server could not be reached, or answered 5xx: keep the report for later."""


class Reporter:
    def __init__(self, reconciler: Reconciler, source, post: Callable[[dict], dict], *, netns: str | None,
                 pattern: str, queue: ReportQueue, interval: float = 5.0, full_every: float = 300.0,
                 clock=time.time, stop_event: threading.Event | None = None,
                 read_interfaces=hostinfo.interfaces, read_conntrack=hostinfo.conntrack):
        self.rec, self.source, self.post = reconciler, source, post
        self.netns, self.pattern, self.queue = netns, pattern, queue
        self.interval, self.full_every, self.clock = interval, full_every, clock
        self.read_interfaces, self.read_conntrack = read_interfaces, read_conntrack
        self.started_at = iso(clock())
        self.wake = threading.Event()
        self._stop = stop_event or threading.Event()
        self.online: bool | None = None
        self.sent_total = 0
        self._need_full = True
        self._next_full = 0.0
        self._rejections = 0
        self._ports: dict[str, tuple] = {}       # port id -> (status, message, counters) as last reported
        self._ifaces: dict[str, hostinfo.Iface] | None = None
        self._unacked: dict[tuple, Detection] = {}  # detections the server has not carried back yet
        reconciler.detect_hook = self.wake.set

    # ---- what the kernel and the host say -------------------------------------------------
    def _hits(self, names) -> dict[tuple[str, str], int]:
        return read_hits(self.rec.executor, names)

    def _port_view(self) -> dict[str, tuple]:
        loaded = self.rec.loaded
        if loaded is None or (self.rec.applier.applied is None and not self.rec.port_errors):
            return {}
        d, rs = loaded.desired, loaded.ruleset
        policies = {p.name: p for p in d.state.policies}
        rids = {(p.name, i): RuleContext(p, i, False, ()).rid for p in d.state.policies for i in range(len(p.rules))}
        declared = {s.name for s in rs.sets}
        # one netlink dump per counter set, one element per port: bounded by the ports
        hits = self._hits(sorted({n(rid) for rid in rids.values() for n in (hit_set, admitted_set, bypass_set)}
                                 & declared))
        # the sources refused (enforce) or that would be (monitor) most often, per port
        offenders: dict[str, list[tuple[str, int]]] = {}
        for port, remote, n in sorted(read_offenders(self.rec.executor, OFFENDER_READ)[0],
                                      key=lambda o: (o[0], -o[2], o[1])):
            offenders.setdefault(port, []).append((remote, n))
        errors = self.rec.port_errors
        view = {}
        for ifname, pid in d.port_ids.items():
            counters = []
            policy = policies.get(rs.port_policy.get(ifname, ""))
            for i, rule in enumerate(policy.rules if policy else ()):
                rid = d.rule_ids.get((policy.name, i))
                if rid:
                    kid = rids[(policy.name, i)]
                    n = hits.get((hit_set(kid), ifname), 0)
                    monitor = policy.enforcement == "monitor"
                    counters.append((rid, hits.get((admitted_set(kid), ifname), 0), 0 if monitor else n,
                                     n if monitor else 0, hits.get((bypass_set(kid), ifname), 0)))
            # a failed batch changed nothing: ports it does not name keep the status they had
            status = ("ERROR", errors[ifname]) if ifname in errors else ("ACTIVE", "") if self.rec.apply_ok \
                else (None, "")
            view[pid] = (*status, tuple(counters), tuple(offenders.get(ifname, ())[:MAX_OFFENDERS]))
        return view

    def _ban(self, det: Detection) -> dict | None:
        d = self.rec.loaded.desired if self.rec.loaded else None
        ban = det.ban
        pid = d.port_ids.get(ban.interface_name or "") if d else None
        if pid is None or ban.expires_at is None:
            return None
        rid, share = None, "port"
        if det.policy is not None:
            rid = d.rule_ids.get((det.policy, det.rule_index))
            rule = next((p.rules[det.rule_index] for p in d.state.policies if p.name == det.policy), None)
            if isinstance(rule, BruteForceRule):
                share = rule.share
        return {"ip_address": ban.ip_address, "port_id": pid, "rule_id": rid, "banned_at": iso(det.banned_at),
                "expires_at": iso(ban.expires_at), "offence_count": ban.offence, "share": share,
                "reason": "brute force detected"}

    # ---- building -------------------------------------------------------------------------
    def build(self, full: bool) -> dict:
        now = self.clock()
        report: dict = {"full": full, "heartbeat": {
            "started_at": self.started_at, "version": connguard.__version__,
            "configurations": {"interfaces": self.pattern, "netns": self.netns,
                               "revision": getattr(self.source, "revision", None),
                               "source_error": (self.source.error or "")[:1024]}}}
        view = self._port_view()
        ports = []
        for pid, (status, message, counters, seen) in sorted(view.items()):
            old = self._ports.get(pid)
            if full or old != (status, message, counters, seen):
                # a delta carries only the rules whose totals moved (send what changed)
                before = set(old[2]) if old is not None and not full else set()
                entry: dict = {"port_id": pid, "counters": [
                    {"rule_id": rid, "admitted": a, "refused": r, "would_refuse": w, "set_full": u}
                    for rid, a, r, w, u in counters if (rid, a, r, w, u) not in before]}
                if status is not None and (full or old is None or old[:2] != (status, message)):
                    entry.update(status=status, status_message=message)
                if full or old is None or old[3] != seen:
                    entry["offenders"] = [{"ip_address": ip, "count": n} for ip, n in seen]
                ports.append(entry)
        self._ports = view
        report["ports"] = ports
        # bans: new detections, and (full) every one the server has not carried back yet
        while self.rec.detected:
            det = self.rec.detected.popleft()
            self._unacked[det.ban.key()] = det
            if not full:
                b = self._ban(det)
                if b:
                    report.setdefault("bans", []).append(b)
        for key, det in list(self._unacked.items()):
            known = self.rec.book.bans.get(key)
            if known is None or known.server or (known.expires_at or 0) <= now:
                del self._unacked[key]
            elif full:
                b = self._ban(det)
                if b:
                    report.setdefault("bans", []).append(b)
        if len(report.get("bans", [])) > MAX_BANS:
            report["bans"] = report["bans"][-MAX_BANS:]
        try:
            ifaces = self.read_interfaces(self.netns, self.pattern)
        except Exception as exc:  # noqa: BLE001 - a failed read must not stop the report
            log.warning("cannot list interfaces: %s", exc)
            ifaces = self._ifaces
        if ifaces is not None:
            listing = [{"name": i.name, "addresses": list(i.addresses), "state": i.state}
                       for i in sorted(ifaces.values(), key=lambda i: i.name)]
            if full:
                report["interfaces"] = listing
            else:
                old = self._ifaces or {}
                changed = [x for x in listing if old.get(x["name"]) != ifaces[x["name"]]]
                if changed or self._ifaces is None:
                    report["interfaces"] = changed
                gone = sorted(set(old) - set(ifaces))
                if gone:
                    report["interfaces_gone"] = gone
            self._ifaces = ifaces
        ct = self.read_conntrack(self.netns)
        if ct is not None:
            report["conntrack"] = {"count": ct[0], "max": ct[1]}
        latency = (self.rec.last_apply or {}).get("seconds")
        # a refused snapshot is reported even when the next answer was good again
        rejected = getattr(self.source, "errors_total", 0)
        error = self.source.error or (getattr(self.source, "last_rejection", "") if rejected > self._rejections
                                      else "") or (self.rec.apply_error if not self.rec.apply_ok else "")
        self._rejections = rejected
        report["apply"] = {"latency_seconds": latency, "errors_total": self.rec.apply_errors_total + rejected,
                           "last_error": (error or "")[:1024]}
        report["queue"] = {"length": len(self.queue), "overflow_total": self.queue.overflow_total}
        return report

    @staticmethod
    def has_content(report: dict) -> bool:
        return bool(report.get("ports") or report.get("bans") or report.get("interfaces") or report.get("interfaces_gone"))

    # ---- sending --------------------------------------------------------------------------
    def step(self) -> None:
        now = self.clock()
        # A full report replaces the server's view of the host: never one before the first
        # apply (it would list no port and wipe the host's counters and offenders).
        ready = self.rec.loaded is not None and (self.rec.applier.applied is not None or bool(self.rec.port_errors))
        full = ready and (self._need_full or now >= self._next_full)
        parts = split(self.build(full))  # bounded in size (report_parts.py)
        sent = 0
        try:
            while (item := self.queue.peek()) is not None:
                path, queued = item
                self._send(queued)
                self.queue.pop(path)
            for part in parts:
                part["queue"] = {"length": 0, "overflow_total": self.queue.overflow_total}
                self._send(part)
                sent += 1
        except Delivery as exc:
            if self.online is not False:
                log.warning("reports not delivered (%s): queueing them on disk", exc)
            self.online = False
            self._need_full = True  # the server's view is stale once we are back
            for part in parts[sent:]:
                if self.has_content(part):
                    part["queue"] = {"length": len(self.queue) + 1, "overflow_total": self.queue.overflow_total}
                    self.queue.put(part)
            return
        if self.online is False:
            log.info("reports delivered again")
        self.online = True
        if getattr(self.source, "connected", True) is False:
            self.source.retry_now()  # the server is back: the source need not sit out its backoff
        if full:
            self._need_full = False
            self._next_full = now + self.full_every

    def _send(self, report: dict) -> None:
        try:
            self.post({"report": report})
            self.sent_total += 1
        except Delivery:
            raise
        except ValueError as exc:  # refused by the server (4xx): retrying it would fail for ever
            log.error("report refused by the server, dropped: %s", exc)

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # noqa: BLE001 - the reporter must outlive any one pass
                log.exception("report pass failed")
            self.wake.wait(self.interval)
            self.wake.clear()

    def stop(self) -> None:
        self._stop.set()
        self.wake.set()
