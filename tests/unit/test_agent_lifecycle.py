"""The agent's service lifecycle (cli/agent_daemon.py) around a real reconciler, with the fake
executor and a fake clock: READY only after the first successful apply (the batch is already
recorded when it is sent), no READY and exit 1 when nothing usable arrives, SIGHUP handled
between passes (config reloaded, the source asked to re-read at once, READY again after)."""

from __future__ import annotations

import threading

from connguard.agent.reconciler import Reconciler
from connguard.agent.source import Desired
from connguard.cli.agent_daemon import AgentLifecycle
from connguard.model import parse_state
from connguard.nft import FakeExecutor

STATE = parse_state({"policies": [{"name": "p", "rules": [{"type": "connection_rate_limit", "max_cps": 20}]}],
                     "ports": [{"interface_name": "tap0", "policy": "p"}]})


class Source:
    name = "test source"

    def __init__(self, desired=None, error=None):
        self.pending, self.error, self.wake = desired, error, threading.Event()
        self.reloads = 0

    def poll(self):
        out, self.pending = self.pending, None
        return out

    def reload_now(self):
        self.reloads += 1
        self.pending = Desired(STATE, "test source")


class Notifier:
    def __init__(self, executor=None):
        self.sent: list[tuple[str, ...]] = []
        self.executor = executor
        self.batches_at_ready: list[int] = []

    def send(self, *lines):
        self.sent.append(lines)
        return True

    def ready(self, status):
        if self.executor is not None:
            self.batches_at_ready.append(len(self.executor.batches))
        return self.send("READY=1", f"STATUS={status}")

    def reloading(self, status):
        return self.send("RELOADING=1", f"STATUS={status}")

    def status(self, status):
        return self.send(f"STATUS={status}")

    def stopping(self, status):
        return self.send("STOPPING=1")


def make(tmp_path, source, *, executor=None, standalone=True, timeout=10.0, clock=None):
    executor = executor or FakeExecutor()
    rec = Reconciler(source, executor, tmp_path, clock=lambda: 1_800_000_000.0)
    notifier = Notifier(executor)
    stopped = []
    reloaded = []
    life = AgentLifecycle(rec, lambda: stopped.append(True), start_timeout=timeout, standalone=standalone,
                          reload_config=lambda: reloaded.append(True), notifier=notifier,
                          clock=clock or (lambda: 0.0))
    return rec, life, notifier, stopped, reloaded, executor


def one_pass(rec):
    rec.before_pass()
    rec.tick()
    rec.after_pass()


def ready_count(notifier):
    return sum(1 for m in notifier.sent if "READY=1" in m)


def test_ready_is_sent_once_after_the_first_successful_apply(tmp_path):
    rec, life, notifier, stopped, _, executor = make(tmp_path, Source())
    one_pass(rec)  # no snapshot yet
    assert ready_count(notifier) == 0 and executor.batches == []
    rec.source.pending = Desired(STATE, "test source")
    one_pass(rec)
    assert ready_count(notifier) == 1 and notifier.batches_at_ready == [1], notifier.sent
    assert notifier.sent[-1][1] == "STATUS=enforcing 1 port(s) from test source", notifier.sent
    one_pass(rec)
    assert ready_count(notifier) == 1 and not stopped


def test_a_rejected_first_state_in_standalone_mode_gives_up_at_once(tmp_path):
    rec, life, notifier, stopped, _, executor = make(tmp_path, Source(error="state file rejected: ports[0]: bad"))
    rec.tick()
    rec.after_pass()
    assert life.rc == 1 and stopped == [True] and ready_count(notifier) == 0
    assert notifier.sent == [("STATUS=no usable state: state file rejected: ports[0]: bad",)], notifier.sent


def test_nothing_applied_before_the_start_timeout_gives_up(tmp_path):
    now = [0.0]
    executor = FakeExecutor()
    executor.fail_when(lambda payload: True, "Error: Could not process rule: No such file or directory")
    rec, life, notifier, stopped, _, _ = make(tmp_path, Source(Desired(STATE, "test source")), executor=executor,
                                              standalone=False, timeout=5.0, clock=lambda: now[0])
    one_pass(rec)
    assert life.rc == 0 and not stopped  # still within the timeout
    now[0] = 5.1
    one_pass(rec)
    assert life.rc == 1 and stopped == [True] and ready_count(notifier) == 0
    assert notifier.sent[-1][0].startswith("STATUS=no usable state: nothing applied after 5 s (start_timeout): "), \
        notifier.sent


def test_sighup_reloads_between_passes_and_signals_ready_again(tmp_path):
    rec, life, notifier, stopped, reloaded, _ = make(tmp_path, Source(Desired(STATE, "test source")))
    one_pass(rec)
    life._on_hup(1, None)
    assert rec.source.wake.is_set() and reloaded == []  # the handler only flags and wakes
    one_pass(rec)
    assert reloaded == [True] and rec.source.reloads == 1
    kinds = [m[0] for m in notifier.sent]
    assert kinds == ["READY=1", "RELOADING=1", "READY=1"], notifier.sent
