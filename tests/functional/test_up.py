"""``connguard up`` driven as a new user would: real processes, a temp data directory and HOME,
a free port (root, namespaces).

The plain ``up`` runs its agent in a lab's host namespace (``--netns``), never in this
machine's root namespace; ``up --lab`` builds its own lab and is checked to leave no namespace
and no process behind.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.netns, pytest.mark.timeout(240)]

CONNGUARD = [shutil.which("connguard")] if shutil.which("connguard") else [
    sys.executable, "-c", "from connguard.cli.main import main; main()"]
URL_RE = re.compile(r"API: (http://\S+)")


def needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (nftables, network namespaces)")


def user_env(home: Path) -> dict[str, str]:
    """A new user's environment: HOME, nothing pointing at a server or a token."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("CONNGUARD_URL", "CONNGUARD_TOKEN", "CONNGUARD_CONFIG", "CONNGUARD_DATA_DIR",
                        "XDG_CONFIG_HOME")}
    env["HOME"] = str(home)
    return env


class Up:
    """A running ``connguard up``: its stdout lines are collected, its stderr goes to a log."""

    def __init__(self, home: Path, data: Path, *args: str):
        self.log_path = home / f"up-{time.monotonic_ns()}.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen([*CONNGUARD, "up", "--data-dir", str(data), "--bind", "127.0.0.1:0", *args],
                                     stdout=subprocess.PIPE, stderr=self.log, text=True, env=user_env(home))
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                m = pattern.search(line)
                if m:
                    return m
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.1)
        raise AssertionError(f"no line matching {pattern.pattern!r} within {timeout} s "
                             f"(exit {self.proc.poll()}); stdout {self.lines}; log:\n{self.tail()}")

    def url(self) -> str:
        return self.wait_for(URL_RE, 90).group(1)

    def tail(self, n: int = 40) -> str:
        if not self.log.closed:
            self.log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def interrupt(self, sig: int = signal.SIGINT, budget: float = 10.0) -> tuple[int, float]:
        """Send ``sig``; (exit status, seconds it took to exit)."""
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=budget + 20)
        finally:
            self.kill()
        return rc, time.monotonic() - t0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


def cli(home: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CONNGUARD, *args], capture_output=True, text=True, env=user_env(home), timeout=timeout)


def config(home: Path) -> Path:
    return home / ".config" / "connguard" / "config.toml"


def config_token(home: Path) -> str:
    m = re.search(r'^token = "(cg_[^"]+)"$', config(home).read_text(), re.M)
    assert m, config(home).read_text()
    return m.group(1)


def descendants(pid: int) -> dict[int, str]:
    """{pid: start time} of ``pid`` and every process below it (through parent links)."""
    parents: dict[int, int] = {}
    starts: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        parents[int(entry)], starts[int(entry)] = int(fields[1]), fields[19]
    out, frontier = {}, [pid]
    while frontier:
        p = frontier.pop()
        if p in starts:
            out[p] = starts[p]
        frontier += [c for c, pp in parents.items() if pp == p and c not in out]
    return out


def still_running(procs: dict[int, str]) -> list[str]:
    alive = []
    for pid, start in procs.items():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if fields[19] == start and fields[0] != "Z":
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            alive.append(f"{pid} {cmdline[:120]}")
    return alive


def has_table(netns: str) -> bool:
    return subprocess.run(["ip", "netns", "exec", netns, "nft", "list", "table", "inet", "connguard"],
                          capture_output=True).returncode == 0


def netns_with(prefix: str) -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.startswith(prefix + "-")]


def test_up_fresh_machine_then_second_up_then_rerun(tmp_path, lab_factory):
    needs_root()
    lab = lab_factory(vms=1, clients=0, sources=0)  # only a namespace for the agent to enforce in
    home, data = tmp_path / "home", tmp_path / "data"
    home.mkdir()
    data.mkdir()
    (data / "up.lock").write_text("999999\n")  # left by an up that died: must not block
    first = Up(home, data, "--netns", lab.host)
    try:
        url = first.url()
        health = httpx.get(url + "/healthz", timeout=10)
        assert health.status_code == 200 and health.json()["status"] == "ok", health.text
        assert (data / "connguard.db").is_file(), sorted(p.name for p in data.iterdir())
        mode = config(home).stat().st_mode & 0o777
        assert mode == 0o600, f"config mode {mode:o}"
        assert (data / "up-tokens.json").stat().st_mode & 0o777 == 0o600
        token = config_token(home)

        # The next command a new user types: no flag, no variable.
        listed = cli(home, "policy", "list", "-f", "json")
        assert listed.returncode == 0 and json.loads(listed.stdout) == [], (listed.stdout, listed.stderr)
        made = cli(home, "policy", "create", "kept", "-f", "json")
        assert made.returncode == 0, made.stderr
        # up's agent works for this host: the lab VM's tap in its namespace becomes a port.
        deadline, ports = time.monotonic() + 30, []
        while time.monotonic() < deadline and not any(p["interface_name"] == lab.vms[0].tap for p in ports):
            time.sleep(0.5)
            ports = json.loads(cli(home, "port", "list", "-f", "json", "-c", "interface_name",
                                   "-c", "binding:host_id", "-c", "device_owner").stdout)
        found = [p for p in ports if p["interface_name"] == lab.vms[0].tap]
        assert found and found[0]["device_owner"] == "connguard:discovered", (ports, first.tail())
        # The config's token goes to the config's server only.
        elsewhere = cli(home, "policy", "list", "--url", "http://127.0.0.1:1")
        assert elsewhere.returncode == 1 and "cannot reach" in elsewhere.stderr, elsewhere.stderr

        # A second up on the same data directory says so and exits non-zero, touching nothing.
        t0 = time.monotonic()
        second = cli(home, "up", "--data-dir", str(data), "--bind", "127.0.0.1:0", "--netns", lab.host)
        assert second.returncode != 0, (second.returncode, second.stdout, second.stderr)
        assert "already running" in second.stderr and str(first.proc.pid) in second.stderr, second.stderr
        assert time.monotonic() - t0 < 30
        assert config_token(home) == token
        assert httpx.get(url + "/healthz", timeout=10).status_code == 200  # the first one still serves

        tree = descendants(first.proc.pid)
        rc, took = first.interrupt(signal.SIGINT)
        assert rc == 0 and took < 10, f"exit {rc} after {took:.1f} s; log:\n{first.tail()}"
        assert not still_running(tree), still_running(tree)
        assert "stopped in" in first.tail()
        # The agent's pending long-poll was answered, not cancelled by uvicorn with a traceback.
        assert "Traceback" not in first.tail(400) and "Cancel" not in first.tail(400), first.tail(400)
        assert has_table(lab.host), "without --clean the kernel keeps connguard's table"
    finally:
        first.kill()

    # A rerun reuses the directory, the database and the token; SIGTERM stops it too, and
    # --clean takes connguard's table out of the kernel on the way.
    again = Up(home, data, "--netns", lab.host, "--clean")
    try:
        again.url()
        assert config_token(home) == token
        names = cli(home, "policy", "list", "-f", "value", "-c", "name")
        assert names.returncode == 0 and names.stdout.split() == ["kept"], (names.stdout, names.stderr)
        assert "tokens: reused" in again.tail(), again.tail()
        rc, took = again.interrupt(signal.SIGTERM)
        assert rc == 0 and took < 10, f"exit {rc} after {took:.1f} s; log:\n{again.tail()}"
        assert not has_table(lab.host), f"--clean left the table; log:\n{again.tail()}"
    finally:
        again.kill()


def test_up_lab_shows_refusals_and_a_ban_then_ctrl_c_leaves_nothing(tmp_path):
    needs_root()
    home, data = tmp_path / "home", tmp_path / "data"
    home.mkdir()
    # An up --lab killed outright leaves its lab (namespaces, attacker): the next one removes it.
    killed = Up(home, data, "--lab")
    try:
        old = killed.wait_for(re.compile(r"lab (cglab[0-9a-f]{6}):"), 90).group(1)
        old_tree = descendants(killed.proc.pid)
    finally:
        killed.kill()
    assert netns_with(old), f"lab {old} vanished with its SIGKILLed up"
    up = Up(home, data, "--lab", "--attack-interval", "10")
    prefix = None
    try:
        up.url()
        assert netns_with(old) == [] and not still_running(old_tree), (netns_with(old), still_running(old_tree))
        prefix = up.wait_for(re.compile(r"lab (cglab[0-9a-f]{6}):"), 30).group(1)
        assert netns_with(prefix), f"no namespace of lab {prefix}"
        t0 = time.monotonic()
        seen: set[str] = set()
        events: list[dict] = []
        while time.monotonic() - t0 < 60 and not {"limit_exceeded", "ban"} <= seen:
            listed = cli(home, "event", "list", "-f", "json")
            assert listed.returncode == 0, listed.stderr
            events = json.loads(listed.stdout)
            seen = {e["event_type"] for e in events}
            time.sleep(2)
        took = time.monotonic() - t0
        assert {"limit_exceeded", "ban"} <= seen, (
            f"after {took:.0f} s the events are {sorted(seen)}: {events[:5]}; log:\n{up.tail()}")
        refused = [e for e in events if e["event_type"] == "limit_exceeded"]
        assert all(e["count"] > 0 for e in refused), refused
        bans = cli(home, "ban", "list", "-f", "json")
        assert bans.returncode == 0 and any(b["ip_address"].startswith("10.88.0.") for b in json.loads(bans.stdout)), \
            (bans.stdout, bans.stderr)
        print(f"refusal and ban events within {took:.0f} s")

        tree = descendants(up.proc.pid)
        rc, stopped = up.interrupt(signal.SIGINT)
        assert rc == 0 and stopped < 10, f"exit {rc} after {stopped:.1f} s; log:\n{up.tail()}"
        assert netns_with(prefix) == [], netns_with(prefix)
        assert not still_running(tree), still_running(tree)
        assert not Path(f"/run/connguard/lab/{prefix}.json").exists()
        assert sorted(p.name for p in (data / "agent").iterdir()) == [], "the lab's agent directory is left"
        print(f"SIGINT: exited in {stopped:.1f} s, {len(tree)} processes gone")
    finally:
        up.kill()
        from connguard.lab.topology import remove

        for p in (old, prefix):
            if p:
                remove(p)


def test_up_on_a_busy_port_says_so_and_leaves_the_data_directory_usable(tmp_path):
    needs_root()
    import socket

    home, data = tmp_path / "home", tmp_path / "data"
    home.mkdir()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = cli(home, "up", "--data-dir", str(data), "--bind", f"127.0.0.1:{port}", "--no-agent")
    assert r.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in r.stderr, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and not config(home).exists(), r.stderr
    up = Up(home, data, "--no-agent")  # the failed run held the lock only while it ran
    try:
        url = up.url()
        assert httpx.get(url + "/healthz", timeout=10).status_code == 200
        rc, took = up.interrupt()
        assert rc == 0 and took < 10, f"exit {rc} after {took:.1f} s"
    finally:
        up.kill()
