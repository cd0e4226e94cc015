"""Observability through ``connguard up --lab`` (issue 6, item 7, as a user sees it): after a
real flood, every metric docs/api.md names is in ``/metrics``, and the refusals the server
counts from the agent's reports match what the attacker saw refused.

The lab's own attacker runs one round at start (``--attack-interval 3600``) and is then quiet,
so the measured flood (to port 8081: the attacker serves 80) is the only traffic to VM 0 while
it is counted.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from test_up import Up, cli, needs_root, netns_with

pytestmark = [pytest.mark.netns, pytest.mark.timeout(240)]

DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def documented_metrics() -> set[str]:
    """The metric names of docs/api.md's table "Metrics and events from reports"."""
    text = DOCS.read_text()
    section = text[text.index("#### Metrics and events from reports"):]
    section = section[:section.index("\n## ")] if "\n## " in section else section
    table = [line for line in section.splitlines() if line.startswith("| `connguard_")]
    return {name for line in table for name in re.findall(r"`(connguard_[a-z_]+)`", line.split("|")[1])}


def samples(url: str) -> dict[str, list]:
    text = httpx.get(url + "/metrics", timeout=10).text
    out: dict[str, list] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append(s)
    return out


def refused_on(url: str, port_id: str, rule_type: str, what: str = "refused") -> float:
    return sum(s.value for s in samples(url).get(f"connguard_port_{what}_total", [])
               if s.labels.get("port_id") == port_id and s.labels.get("rule_type") == rule_type)


def admitted_on(url: str, port_id: str, rule_type: str) -> float:
    return refused_on(url, port_id, rule_type, "admitted")


def settled(read, *, quiet: float, timeout: float) -> float:
    """A value that has not moved for ``quiet`` seconds (reports are periodic)."""
    deadline = time.monotonic() + timeout
    last, since = read(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(1)
        now = read()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return now
    raise AssertionError(f"still moving after {timeout} s (last {last})")


def test_metrics_after_a_lab_attack_match_the_traffic(tmp_path):
    needs_root()
    names = documented_metrics()
    assert len(names) >= 18, names  # both tables were found and read
    home, data = tmp_path / "home", tmp_path / "data"
    home.mkdir()
    up = Up(home, data, "--lab", "--attack-interval", "3600")
    prefix = None
    try:
        url = up.url()
        prefix = up.wait_for(re.compile(r"lab (cglab[0-9a-f]{6}):"), 30).group(1)
        ports = json.loads(cli(home, "port", "list", "-f", "json", "-c", "id", "-c", "interface_name",
                               "-c", "binding:host_id").stdout)
        vm0 = next(p["id"] for p in ports if p["interface_name"] == "tapvm0")
        # Wait for the start-up round to be over and counted.
        deadline = time.monotonic() + 90
        while not re.search(r"lab attack: \d+ logins", up.tail(200)):
            assert time.monotonic() < deadline, up.tail()
            time.sleep(1)
        before = settled(lambda: refused_on(url, vm0, "connection_rate_limit"), quiet=12, timeout=90)
        admitted_before = admitted_on(url, vm0, "connection_rate_limit")

        flood = cli(home, "lab", "attack", "flood", "--prefix", prefix, "--vm", "0", "--port", "8081", "--rate", "60",
                    "--duration", "4", "-f", "json")
        assert flood.returncode == 0, flood.stderr
        seen = json.loads(flood.stdout)
        # The rate limit drops the SYN: the attacker sees a timeout (its 0.9 s deadline is below
        # the 1 s SYN retransmit, so one attempt is one SYN the kernel counts once).
        not_admitted = seen["attempted"] - seen["admitted"]
        assert not_admitted >= 100, f"the attacker saw {not_admitted} of {seen['attempted']} not admitted"
        after = settled(lambda: refused_on(url, vm0, "connection_rate_limit"), quiet=12, timeout=90)
        counted = after - before
        assert abs(counted - not_admitted) <= 0.05 * not_admitted, (
            f"server counted {counted:.0f} refused, the attacker saw {not_admitted} not admitted "
            f"({seen['refused']} reset, {seen['timeout']} timed out) of {seen['attempted']}")
        print(f"refused: attacker {not_admitted} of {seen['attempted']}, /metrics {counted:.0f}")
        let_through = settled(lambda: admitted_on(url, vm0, "connection_rate_limit"), quiet=6, timeout=60) \
            - admitted_before
        assert abs(let_through - seen["admitted"]) <= 0.05 * max(seen["admitted"], 1), (
            f"server counted {let_through:.0f} admitted, the attacker saw {seen['admitted']} of {seen['attempted']}")
        print(f"admitted: attacker {seen['admitted']}, /metrics {let_through:.0f}")

        got = samples(url)
        missing = sorted(n for n in names if n not in got and n + "_count" not in got)  # a sample, not a HELP line
        alive = got["connguard_agents_alive"][0].value
        assert alive == 1, f"connguard_agents_alive {alive}"

        # The agent's own loop (up runs it in-process): it applied, without error, and reports.
        def agent_value(name: str) -> float:
            found = [s.value for s in got.get(name, []) if s.labels.get("host") == host]
            assert len(found) == 1, (name, got.get(name))
            return found[0]

        host = ports[0]["binding:host_id"]
        applies = agent_value("connguard_agent_apply_seconds_count")
        assert applies >= 1 and agent_value("connguard_agent_apply_seconds_sum") > 0, applies
        assert agent_value("connguard_agent_apply_errors_total") == 0
        assert agent_value("connguard_agent_report_queue_length") == 0
        assert agent_value("connguard_agent_server_reachable") == 1
        sent = agent_value("connguard_agent_reports_sent_total")
        assert sent >= 2, f"{sent} reports sent"
        print(f"agent: {applies:.0f} applies, {sent:.0f} reports sent")
        assert not missing, f"documented but without a sample in /metrics: {missing}"
        rc, _ = up.interrupt()
        assert rc == 0 and netns_with(prefix) == [], up.tail()
    finally:
        up.kill()
        if prefix:
            from connguard.lab.topology import remove

            remove(prefix)
