"""A login service inside a VM namespace, for brute-force tests.

A real OpenSSH server when ``/usr/sbin/sshd`` exists (generated ed25519 host key, minimal
config in a temporary directory), otherwise a small login-protocol server of our own
(``python -m connguard.lab.login --port P``): banner, ``login:`` and ``Password:`` prompts,
always "Login incorrect".
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import sys
import tempfile

from connguard.exceptions import LabError

SSHD = "/usr/sbin/sshd"
BANNER = "connguard-lab login service"


def sshd_config(tmp: str, port: int, host_key: str) -> str:
    return "\n".join([
        f"Port {port}",
        "ListenAddress 0.0.0.0",
        "ListenAddress ::",
        f"HostKey {host_key}",
        f"PidFile {os.path.join(tmp, 'sshd.pid')}",
        "UsePAM no",
        "StrictModes no",
        "PasswordAuthentication yes",
        "KbdInteractiveAuthentication no",
        "PermitRootLogin no",
        # no throttling of unauthenticated connections by sshd itself: the network decides
        "MaxStartups 1000:100:1000",
        "LoginGraceTime 10",
        "LogLevel INFO",
        "",
    ])


class LoginService:
    """Context manager running a login service on ``port`` inside ``netns``.

    ``kind`` is "sshd" or "fallback"; ``log()`` returns what sshd wrote on stderr so far.
    """

    def __init__(self, netns: str, port: int = 22, *, force_fallback: bool = False,
                 deadline: float = 10.0):
        from connguard.lab import netns as nsx
        from connguard.lab.procs import Proc

        self.netns, self.port = netns, port
        self._tmp: str | None = None
        use_sshd = os.path.exists(SSHD) and not force_fallback
        self.kind = "sshd" if use_sshd else "fallback"
        if use_sshd:
            keygen = shutil.which("ssh-keygen")
            if not keygen:
                raise LabError("ssh-keygen is not installed (apt-get install openssh-client)")
            self._tmp = tempfile.mkdtemp(prefix="cglab-sshd-")
            key = os.path.join(self._tmp, "ssh_host_ed25519_key")
            nsx.run([keygen, "-q", "-t", "ed25519", "-N", "", "-f", key])
            cfg = os.path.join(self._tmp, "sshd_config")
            with open(cfg, "w") as fh:
                fh.write(sshd_config(self._tmp, port, key))
            os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # privilege separation dir
            check = nsx.run([SSHD, "-t", "-f", cfg], check=False)
            if check.returncode != 0:
                self._cleanup()
                raise LabError(f"sshd rejected its config: {check.stderr.strip()}")
            argv = nsx.ns_argv(netns, [SSHD, "-D", "-e", "-f", cfg])
        else:
            argv = nsx.py_argv(netns, "connguard.lab.login", [f"--port={port}"])
        self._proc = Proc(argv, what=f"{self.kind} in {netns}")
        try:
            self._wait_ready(deadline)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, deadline: float) -> None:
        from connguard.lab import netns as nsx
        from connguard.lab.nodes import TRAFFIC

        if self.kind == "fallback":
            self._proc.wait_for("ready", deadline)
            return
        # poll inside the namespace until the port accepts, or sshd dies, or the deadline
        import subprocess

        waiter = subprocess.Popen(
            nsx.py_argv(self.netns, TRAFFIC, ["wait-port", f"--port={self.port}",
                                              f"--deadline={deadline}"]),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=nsx.child_env())
        while True:
            try:
                rc = waiter.wait(timeout=0.1)
                break
            except subprocess.TimeoutExpired:
                if self._proc.proc.poll() is not None:
                    waiter.kill()
                    waiter.wait()
                    raise LabError(f"sshd in {self.netns} exited: {self._proc.error_text()}")
        if rc != 0:
            raise LabError(f"sshd in {self.netns} not accepting on port {self.port} after "
                           f"{deadline:.0f}s: {self._proc.error_text()}")

    def log(self) -> list[str]:
        return list(self._proc.stderr_tail)

    def _cleanup(self) -> None:
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def stop(self) -> None:
        self._proc.stop()
        self._cleanup()

    def __enter__(self) -> LoginService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ------------------------------------------------------------------------------ fallback server
async def _serve(port: int) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(f"{BANNER}\r\nlogin: ".encode())
            await writer.drain()
            await asyncio.wait_for(reader.readline(), 30)
            writer.write(b"Password: ")
            await writer.drain()
            await asyncio.wait_for(reader.readline(), 30)
            writer.write(b"Login incorrect\r\n")
            await writer.drain()
        except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    servers = []
    for host, fam in (("0.0.0.0", socket.AF_INET), ("::", socket.AF_INET6)):
        sock = socket.socket(fam, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if fam == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        servers.append(await asyncio.start_server(handle, sock=sock, backlog=1024))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m connguard.lab.login")
    ap.add_argument("--port", type=int, default=22)
    a = ap.parse_args(argv)
    asyncio.run(_serve(a.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
