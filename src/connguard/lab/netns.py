"""Low-level helpers for network namespaces: run commands, create and delete namespaces.

Every command is an argument list (no shell). Nothing here touches the root namespace's
network configuration: links are created directly inside their target namespaces.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence

from connguard.exceptions import LabError

NETNS_DIR = "/run/netns"
LAB_NAME_RE = re.compile(r"^cglab[0-9a-f]{6}$")


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, veth pairs)")


def require_tool(name: str) -> str:
    path = shutil.which(name) or (f"/usr/sbin/{name}" if os.path.exists(f"/usr/sbin/{name}") else None)
    if not path:
        raise LabError(f"{name} is not installed (apt-get install {_PACKAGE.get(name, name)})")
    return path


_PACKAGE = {"ip": "iproute2", "conntrack": "conntrack", "hping3": "hping3", "sshd": "openssh-server",
            "ssh-keygen": "openssh-client", "nft": "nftables"}


def run(argv: Sequence[str], *, input: str | None = None, check: bool = True,
        timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run ``argv``; raise :class:`LabError` with its stderr when it fails and ``check``."""
    try:
        proc = subprocess.run(list(argv), input=input, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except FileNotFoundError as exc:
        raise LabError(f"{argv[0]} not found: {exc}") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"timed out after {timeout}s: {' '.join(argv)}") from exc
    if check and proc.returncode != 0:
        msg = (proc.stderr or proc.stdout).strip().splitlines()
        raise LabError(f"{' '.join(argv)}: {msg[-1] if msg else 'exit ' + str(proc.returncode)}")
    return proc


def ns_argv(netns: str, argv: Sequence[str]) -> list[str]:
    """``ip netns exec NETNS argv...``."""
    return ["ip", "netns", "exec", netns, *argv]


def py_argv(netns: str, module: str, args: Sequence[str]) -> list[str]:
    """Run ``python -m module args`` inside ``netns`` with this interpreter (same venv)."""
    return ns_argv(netns, [sys.executable, "-m", module, *args])


def child_env() -> dict[str, str]:
    """Environment for helper processes: make sure ``connguard`` is importable."""
    env = dict(os.environ)
    import connguard

    src = os.path.dirname(os.path.dirname(os.path.abspath(connguard.__file__)))
    parts = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if src not in parts:
        parts.insert(0, src)
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def list_netns() -> list[str]:
    proc = run(["ip", "netns", "list"], check=False)
    names = []
    for line in proc.stdout.splitlines():
        if line.strip():
            names.append(line.split()[0])
    if os.path.isdir(NETNS_DIR):  # also names whose ``ip netns list`` line may be odd
        for name in os.listdir(NETNS_DIR):
            if name not in names:
                names.append(name)
    return names


def add_netns(name: str) -> None:
    run(["ip", "netns", "add", name])


def delete_netns(name: str) -> None:
    """Delete a namespace, killing whatever still runs inside it first."""
    if name not in list_netns():
        return
    pids = run(["ip", "netns", "pids", name], check=False).stdout.split()
    for pid in pids:
        try:
            os.kill(int(pid), 9)
        except (ProcessLookupError, ValueError):
            pass
    run(["ip", "netns", "delete", name], check=False)


def sysctl(netns: str, settings: dict[str, str]) -> None:
    run(ns_argv(netns, ["sysctl", "-q", "-w", *[f"{k}={v}" for k, v in settings.items()]]))


def ip_batch(netns: str, commands: Sequence[str]) -> None:
    """Run several ``ip`` commands in ``netns`` in one process (``ip -n NS -batch -``).

    Commands are built from validated integers and fixed words only.
    """
    if commands:
        run(["ip", "-n", netns, "-batch", "-"], input="\n".join(commands) + "\n")
