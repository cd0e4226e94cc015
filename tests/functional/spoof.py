"""Crafted TCP packets for the adversarial tests: built with scapy, sent from a lab namespace by
raw sockets at a paced rate, and nft counters in lab namespaces (never the root one) to count
what arrives where.

``send(netns, packets, rate, duration)`` writes the packets to a file and runs this module
inside ``netns`` (``python3 spoof.py FILE RATE DURATION``), which cycles through them. Raw
IPv4 (IP_HDRINCL) and IPv6 (IPPROTO_RAW) sockets send each packet as built: spoofed sources,
any flag combination, fragments and extension headers included.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import time


def addresses(prefix: str, n: int, *, skip: int = 0, seed: int = 8) -> list[str]:
    """``n`` distinct random host addresses of ``prefix`` (after its first ``skip`` ones)."""
    net = ipaddress.ip_network(prefix)
    rng = random.Random(seed)
    size = min(net.num_addresses - 2, 1 << 62) - skip
    picks = rng.sample(range(size), min(n, size)) if size < 1 << 20 else [rng.randrange(size) for _ in range(n)]
    return [str(net.network_address + 1 + skip + k) for k in picks]


_FLAG_BITS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10, "U": 0x20, "E": 0x40, "C": 0x80}


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tcp_packet(src: str, dst: str, sport: int, dport: int, flags: str, seq: int, ack: int = 0,
               payload: bytes = b"") -> bytes:
    """One IPv4 or IPv6 packet with a TCP segment (no options), checksums filled in. Built by
    hand: scapy takes ~2 ms a packet, too slow for floods of distinct connections."""
    bits = sum(_FLAG_BITS[c] for c in flags)
    seg = struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, bits, 64240, 0, 0) + payload
    if ":" in dst:
        s, d = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
        pseudo = s + d + struct.pack("!IxxxB", len(seg), 6)
        seg = seg[:16] + struct.pack("!H", _checksum(pseudo + seg)) + seg[18:]
        return struct.pack("!IHBB", 6 << 28, len(seg), 6, 64) + s + d + seg
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    seg = seg[:16] + struct.pack("!H", _checksum(s + d + struct.pack("!xBH", 6, len(seg)) + seg)) + seg[18:]
    hdr = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(seg), 0, 0x4000, 64, 6, 0) + s + d
    return hdr[:10] + struct.pack("!H", _checksum(hdr)) + hdr[12:] + seg


def tcp_packets(sources: list[str], dst: str, dport: int, flags: str = "S", *, n: int = 1000,
                payload: bytes = b"", seed: int = 9) -> list[bytes]:
    """``n`` TCP packets to ``dst:dport`` with ``flags`` (scapy letters), cycling through the
    sources, each with its own random source port and sequence number."""
    rng = random.Random(seed)
    return [tcp_packet(sources[k % len(sources)], dst, rng.randrange(1024, 65535), dport, flags,
                       rng.randrange(1 << 32), rng.randrange(1 << 32) if "A" in flags else 0, payload)
            for k in range(n)]


def fragmented(packets: list[bytes], size: int = 16) -> list[bytes]:
    """Each packet split into fragments of ``size`` bytes of IP payload (a multiple of 8; with
    16, the first fragment carries only part of a 20-byte TCP header)."""
    from scapy.all import IP, IPv6, IPv6ExtHdrFragment, fragment, fragment6

    out = []
    for raw in packets:
        if raw[0] >> 4 == 4:
            out += [bytes(p) for p in fragment(IP(raw), fragsize=size)]
        else:
            pkt = IPv6(raw)
            l3 = IPv6(src=pkt.src, dst=pkt.dst) / IPv6ExtHdrFragment(id=random.getrandbits(32))
            out += [bytes(p) for p in fragment6(l3 / pkt.payload, 40 + 8 + size)]
    return out


def with_extension_headers(packets: list[bytes]) -> list[bytes]:
    """IPv6 packets with a hop-by-hop and a destination-options header before TCP."""
    from scapy.all import IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrHopByHop

    out = []
    for raw in packets:
        pkt = IPv6(raw)
        out.append(bytes(IPv6(src=pkt.src, dst=pkt.dst) / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / pkt.payload))
    return out


def send(netns: str, packets: list[bytes], rate: float, duration: float) -> int:
    """Send ``packets`` (cycled) at ``rate`` per second for ``duration`` s from ``netns``;
    returns how many were sent."""
    with tempfile.NamedTemporaryFile("wb", suffix=".pkts", delete=False) as fh:
        for p in packets:
            fh.write(struct.pack("!H", len(p)) + p)
    try:
        proc = subprocess.run(["ip", "netns", "exec", netns, sys.executable, os.path.abspath(__file__),
                               fh.name, str(rate), str(duration)],
                              capture_output=True, text=True, timeout=duration + 60)
        if proc.returncode != 0:
            raise RuntimeError(f"spoof sender failed: {proc.stderr.strip()[-500:]}")
        return json.loads(proc.stdout)["sent"]
    finally:
        os.unlink(fh.name)


def _sender(path: str, rate: float, duration: float) -> int:
    data = open(path, "rb").read()
    pkts, i = [], 0
    while i < len(data):
        (n,) = struct.unpack_from("!H", data, i)
        pkts.append(data[i + 2:i + 2 + n])
        i += 2 + n
    s4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
    targets = []
    for p in pkts:
        if p[0] >> 4 == 4:
            targets.append((s4, (socket.inet_ntop(socket.AF_INET, p[16:20]), 0)))
        else:
            targets.append((s6, (socket.inet_ntop(socket.AF_INET6, p[24:40]), 0)))
    total = int(rate * duration)
    start = time.monotonic()
    sent = 0
    while sent < total:
        due = min(total, int((time.monotonic() - start) * rate) + 1)
        while sent < due:
            sock, addr = targets[sent % len(pkts)]
            try:
                sock.sendto(pkts[sent % len(pkts)], addr)
            except OSError:  # ENOBUFS under load: the packet is lost, as on a wire
                pass
            sent += 1
        time.sleep(0.001)
    return sent


class Probe:
    """Named nft counters in a lab namespace (table ``inet cgprobe``, prerouting before
    everything): ``Probe(ns, {"syn": "tcp dport 80 tcp flags & (syn|ack) == syn"})``."""

    def __init__(self, netns: str, counters: dict[str, str]):
        self.netns = netns
        lines = ["table inet cgprobe {"] + [f"  counter {name} {{}}" for name in counters]
        lines += ["  chain pre {", "    type filter hook prerouting priority -500; policy accept;"]
        lines += [f"    {match} counter name {name}" for name, match in counters.items()]
        lines += ["  }", "}"]
        self._nft(["delete", "table", "inet", "cgprobe"], check=False)
        self._nft(["-f", "-"], input="\n".join(lines) + "\n")

    def _nft(self, args, check=True, input=None):
        return subprocess.run(["ip", "netns", "exec", self.netns, "nft", *args], input=input,
                              capture_output=True, text=True, check=check)

    def read(self) -> dict[str, int]:
        out = json.loads(self._nft(["-j", "list", "counters", "table", "inet", "cgprobe"]).stdout)
        return {c["counter"]["name"]: c["counter"]["packets"] for c in out["nftables"] if "counter" in c}

    def close(self) -> None:
        self._nft(["delete", "table", "inet", "cgprobe"], check=False)

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


if __name__ == "__main__":
    print(json.dumps({"sent": _sender(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]))}))
