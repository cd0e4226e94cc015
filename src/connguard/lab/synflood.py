"""Raw SYN floods with random source addresses (hping3), run inside a client namespace.

Replies to spoofed sources go nowhere; that is expected. hping3 has no IPv6 support and
scapy is not a dependency, so IPv6 SYN floods raise :class:`LabError`.
"""

from __future__ import annotations

import re
import signal
import subprocess

from connguard.exceptions import LabError
from connguard.lab import netns as nsx
from connguard.lab.results import SynFloodResult

_SENT_RE = re.compile(r"(\d+) packets transmitted")


def hping3_argv(target: str, port: int, rate_pps: int | None) -> list[str]:
    argv = ["hping3", "-q", "-S", "-p", str(int(port)), "--rand-source"]
    if rate_pps is None:
        argv.append("--flood")
    else:
        if rate_pps <= 0:
            raise LabError("rate_pps must be positive")
        argv += ["-i", f"u{max(1, int(1_000_000 / rate_pps))}"]
    argv.append(target)
    return argv


def syn_flood(netns: str, target: str, port: int, duration: float, rate_pps: int | None = None,
              ipv6: bool = False) -> SynFloodResult:
    """Send SYNs from random sources to ``target:port`` for ``duration`` seconds.

    ``rate_pps=None`` floods as fast as hping3 can. Returns the packets hping3 reports as
    transmitted (``sent`` is None if it printed no statistics). hping3 is interrupted
    (SIGINT, so it prints its statistics) after ``duration`` seconds and killed if it lingers.
    """
    if ipv6 or ":" in target:
        raise LabError("SYN floods over IPv6 are not supported: hping3 has no IPv6 "
                       "and scapy is not installed")
    if duration <= 0:
        raise LabError("duration must be positive")
    nsx.require_tool("hping3")
    argv = nsx.ns_argv(netns, hping3_argv(target, port, rate_pps))
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL)
    try:
        try:
            proc.wait(timeout=duration)
            out = proc.stdout.read() if proc.stdout else ""
            raise LabError(f"hping3 ended early: {out.strip().splitlines()[-1:] or proc.returncode}")
        except subprocess.TimeoutExpired:
            pass
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    m = _SENT_RE.search(out or "")
    return SynFloodResult(target, port, duration, int(m.group(1)) if m else None, out or "")
