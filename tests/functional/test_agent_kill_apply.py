"""``kill -9`` of a server-driven agent in the middle of applying a large change (issue 6):
10,000 ports move between two policies and back, with each executor (the ``nft`` tool, and
libnftables in-process); the agent is killed while its ``nft`` batch
runs (0.1 s into it, 0.6 s into it with its ``nft`` killed too, and right after ``nft``
ended, before the agent's bookkeeping). Read back over netlink, the namespace holds exactly the old or the new ruleset (the digests of
both are computed beforehand by applying each in a scratch namespace), never a mix; the
restarted agent converges to the state served, and every ban placed before the kill (one by
the kernel from a real brute force, one from the server's snapshot) is still there.

The server is a fake that answers a long-poll when its revision moves (a 10,000-port
snapshot every half second would keep the agent parsing).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from datetime import datetime, timedelta, timezone

import pytest

from connguard.agent.snapshot import from_host_state
from connguard.compiler import compile_host
from connguard.nft import NftCli, observe
from connguard.nft import readback as rb
from connguard.nft.applier import Applier
from nsenforce import wait_for
from test_agent_failstatic import CLI, lab  # noqa: F401

pytestmark = [pytest.mark.netns, pytest.mark.timeout(240)]

N = 10_000
P, Q = "aaaaaaaa-0000-4000-8000-00000000000a", "aaaaaaaa-0000-4000-8000-00000000000b"
VM_PORT = "11111111-2222-3333-4444-555555555555"
SERVER_BAN = "198.51.100.77"
ATTEMPTS = 3


def body(revision: int, tap: str, moved: bool) -> bytes:
    """All ports in policy P, or (``moved``) all but the VM's in Q."""
    rule = lambda rid, **r: {"id": rid, "qos_policy_id": None, "revision_number": 1, **r}  # noqa: E731
    ports = [{"id": VM_PORT, "name": "vm0", "project_id": "p", "interface_name": tap, "fixed_ips": [],
              "device_owner": "", "effective_qos_policy_id": P}]
    ports += [{"id": f"{i:08d}-0000-4000-8000-000000000000", "name": f"p{i}", "project_id": "p",
               "interface_name": f"cgk{i:05d}", "fixed_ips": [], "device_owner": "",
               "effective_qos_policy_id": Q if moved else P} for i in range(1, N)]
    expires = (datetime.now(timezone.utc) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return json.dumps({"host_state": {
        "host": "host0", "revision": revision, "ports": ports, "allowlist": [],
        "policies": [
            {"id": P, "name": "web", "enforcement": "enforce", "rules": [
                rule("bbbbbbbb-0000-4000-8000-000000000001", type="connection_rate_limit", direction="ingress",
                     scope="remote_ip", max_cps=25),
                rule("bbbbbbbb-0000-4000-8000-000000000002", type="brute_force", profile="ssh",
                     max_attempts=ATTEMPTS, window=60, ban_seconds=600)]},
            {"id": Q, "name": "bulk", "enforcement": "enforce", "rules": [
                rule("bbbbbbbb-0000-4000-8000-000000000003", type="connection_rate_limit", direction="ingress",
                     scope="port", max_cps=500)]}],
        "bans": [{"id": "cccccccc-0000-4000-8000-000000000001", "ip_address": SERVER_BAN, "port_id": VM_PORT,
                  "scope": "port", "expires_at": expires, "offence_count": 1, "origin": "manual"}]}}).encode()


class Server:
    def __init__(self, good: bytes, revision: int):
        self.good, self.revision = good, revision
        self.changed = threading.Condition()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                m = re.search(r"revision=(\d+)", self.path)
                with fake.changed:
                    if m and "wait=" in self.path:
                        fake.changed.wait_for(lambda: fake.revision > int(m.group(1)), timeout=20)
                    body = fake.good
                self._answer(body)

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self._answer(b'{"agent": {}, "revision": 0, "ignored_port_ids": [], "ignored_interfaces": []}')

            def _answer(self, body: bytes):
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def serve(self, good: bytes, revision: int) -> None:
        with self.changed:
            self.good, self.revision = good, revision
            self.changed.notify_all()

    def close(self):
        self.httpd.shutdown()


def digest(ex: NftCli, owned: list[str]) -> tuple | None:
    """The table as the drift check sees it (chains, rules in order, owned sets' elements) and
    the names of its sets: equal for equal rulesets, whatever namespace holds them."""
    if not rb.table_exists(ex):
        return None
    snap = rb.snapshot(ex, owned)
    return (tuple(sorted(snap.chains.items())), tuple(sorted((c, tuple(r)) for c, r in snap.rules.items())),
            tuple(sorted(snap.sets.items())), tuple(sorted(rb.set_names(ex))))


def nft_child(pid: int) -> int | None:
    """The pid of ``pid``'s child running an ``nft -f`` batch (not a query), if any."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            if ppid != pid:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if argv and argv[0].endswith(b"nft") and b"-f" in argv:
            return int(entry)
    return None


def running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def big_batch(agent, tail) -> int:
    """The agent's ``nft -f`` child still running 0.1 s after it was seen: the 10,000-port
    apply (ban batches and queries take milliseconds)."""
    deadline = time.monotonic() + 30
    while True:
        assert time.monotonic() < deadline and agent.poll() is None, f"no nft batch seen: {tail()}"
        child = nft_child(agent.pid)
        if child is None:
            time.sleep(0.003)
            continue
        time.sleep(0.1)
        if running(child):
            return child


def loaded(agent, tail, path, revision: int) -> None:
    """In-process executor (no ``nft`` child to watch): wait until the agent logged that it
    loaded the snapshot of ``revision`` (its compile and apply follow at once)."""
    deadline = time.monotonic() + 60
    while f"loaded server snapshot revision {revision}:" not in path.read_text():
        assert time.monotonic() < deadline and agent.poll() is None, f"revision {revision} never loaded: {tail()}"
        time.sleep(0.005)


# cli: the ``nft`` tool in a child process (killed with the agent, or left to finish);
# lib: libnftables inside the agent (connguard.nft.libnft), killed at several points after the
# snapshot is loaded: the 10,000-port delta takes seconds to compile and commit here.
KILLS = {"cli": ((0.0, False), (0.5, True), (None, False)), "lib": ((0.3, False), (1.5, False), (None, False))}


@pytest.mark.parametrize("backend", ["cli", "lib"])
def test_kill_9_mid_apply_leaves_old_or_new_and_the_restart_keeps_every_ban(lab, tmp_path, backend):
    vm, cl = lab.vms[0], lab.clients[0]
    bodies = {False: body(1, vm.tap, False), True: body(2, vm.tap, True)}
    # the expected digests: each state applied alone in a scratch namespace
    scratch = f"cgkill{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", scratch], check=True)
    try:
        rulesets = {m: compile_host(from_host_state(json.loads(b), host="host0").state) for m, b in bodies.items()}
        owned = sorted({s.name for rs in rulesets.values() for s in rs.sets if not s.long_lived})
        expected = {}
        ex = NftCli(scratch)
        for moved in (False, True):
            Applier(ex).apply(rulesets[moved])
            expected[moved] = digest(ex, owned)
    finally:
        subprocess.run(["ip", "netns", "del", scratch], check=True)
    assert expected[False] != expected[True]

    fake = Server(bodies[False], 1)
    (tmp_path / "token").write_text("t\n")
    (tmp_path / "token").chmod(0o600)  # the agent refuses a token file others can read
    log = open(tmp_path / "agent.log", "a")
    kernel = NftCli(lab.host)
    argv = [*CLI, "agent", "--server", fake.url, "--token-file", str(tmp_path / "token"), "--host", "host0",
            "--netns", lab.host, "--workdir", str(tmp_path / "w"), "--report-interval", "1", "--interval", "0.3"]
    tail = lambda: (tmp_path / "agent.log").read_text()[-2000:]  # noqa: E731
    env = dict(os.environ, CONNGUARD_NFT_BACKEND=backend)
    start = lambda: subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True, env=env)  # noqa: E731
    agent = start()
    try:
        with vm.login_service(22):
            wait_for(lambda: digest(kernel, owned) == expected[False], 60, 0.5, what=f"first apply: {tail()}")
            # a ban the kernel places from real traffic, and the server's ban
            cl.bruteforce(vm, 22, attempts=ATTEMPTS + 2, timeout=0.8, source=cl.ipv4)
            bans = lambda: {b.ip_address for b in observe(kernel, bans_only=True).bans if b.interface_name == vm.tap}  # noqa: E731
            wait_for(lambda: {cl.ipv4, SERVER_BAN} <= bans(), 10, 0.2, what=f"both bans in the kernel: {bans()}")

            revision, moved = 2, False
            # (seconds after the batch's nft started, or None: right after it ended; kill nft too)
            for delay, with_nft in KILLS[backend]:
                moved, revision = not moved, revision + 1
                t0 = time.monotonic()
                fake.serve(body(revision, vm.tap, moved), revision)
                if backend == "lib":
                    loaded(agent, tail, tmp_path / "agent.log", revision)
                    child, mark = None, (tmp_path / "agent.log").read_text().rindex(f"revision {revision}:")
                else:
                    child = big_batch(agent, tail)
                if delay is None and child is None:  # right after the in-process commit was logged
                    wait_for(lambda: "applied (" in (tmp_path / "agent.log").read_text()[mark:], 60, 0.001,
                             what=f"the apply of revision {revision}: {tail()}")
                elif delay is None:
                    while running(child):
                        time.sleep(0.001)
                else:
                    time.sleep(delay)
                os.killpg(agent.pid, signal.SIGKILL) if with_nft else os.kill(agent.pid, signal.SIGKILL)
                agent.wait(10)
                if child is not None and not with_nft:  # the orphaned batch ends on its own (commits, or fails on a cut input)
                    wait_for(lambda: not running(child), 30, 0.05, what="the orphaned nft")
                now = digest(kernel, owned)
                held = [m for m in (False, True) if now == expected[m]]
                assert held, f"after kill -9 ({delay} s into the batch, nft killed: {with_nft}) the kernel " \
                             f"holds neither the old nor the new ruleset"
                print(f"[{backend}] killed {'after' if delay is None else f'{delay} s into'} the batch (nft killed: {with_nft}): "
                      f"kernel holds the {'new' if held[0] == moved else 'old'} ruleset")
                assert {cl.ipv4, SERVER_BAN} <= bans(), f"a ban was lost at the kill: {bans()}"
                agent = start()
                wait_for(lambda: digest(kernel, owned) == expected[moved], 60, 0.5,
                         what=f"the restarted agent converges: {tail()}")
                print(f"  converged {time.monotonic() - t0:.1f} s after the change was served")
                assert {cl.ipv4, SERVER_BAN} <= bans(), f"a ban was lost after the restart: {bans()}"
    finally:
        if agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            agent.wait(15)
        fake.close()
        log.close()
