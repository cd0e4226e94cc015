"""Read our table straight from the kernel over nfnetlink, without the ``nft`` tool's cache.

Why: nft 1.0.6 fills its whole cache, every set's elements included, before printing a chain,
a rule, a counter or a table, even with ``-t`` (``list chain`` took 1.6 s with 50,000 bans and
minutes with the limiter sets full). Only ``list chains``, ``list sets -t`` and ``list set NAME``
skip the other sets. A netlink dump asks for exactly one kind of object: the rules of one
table, the named counters, or the elements of one set, and a set dump can be cut short after
``limit`` elements, so no reading here grows with what an attacker can put in a dynamic set.

Only dumps (read-only). Messages come back as lists of ``(attribute type, payload)``; the
meaning of the numbers is in ``linux/netfilter/nf_tables.h``.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import threading

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFPROTO_INET = 1
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLA_F_NESTED = 0x8000
CLONE_NEWNET = 0x40000000

# message types
GETTABLE, GETCHAIN, GETRULE, GETSET, GETSETELEM, GETOBJ = 1, 4, 7, 10, 13, 19
# a few attribute numbers the callers need
TABLE_NAME = 1
SET_TABLE, SET_NAME = 1, 2
RULE_TABLE, RULE_CHAIN, RULE_HANDLE, RULE_EXPRESSIONS, RULE_POSITION, RULE_USERDATA = 1, 2, 3, 4, 6, 7
CHAIN_TABLE, CHAIN_HANDLE, CHAIN_NAME, CHAIN_USE, CHAIN_COUNTERS, CHAIN_ID = 1, 2, 3, 6, 8, 11
SET_ELEM_LIST_TABLE, SET_ELEM_LIST_SET, SET_ELEM_LIST_ELEMENTS = 1, 2, 3
ELEM_KEY, ELEM_DATA, ELEM_FLAGS, ELEM_TIMEOUT, ELEM_EXPIRATION, ELEM_EXPR, ELEM_EXPRESSIONS = 1, 2, 3, 4, 5, 7, 11
OBJ_TABLE, OBJ_NAME, OBJ_TYPE, OBJ_DATA = 1, 2, 3, 4
OBJECT_COUNTER = 1
COUNTER_PACKETS = 2
LIST_ELEM, EXPR_NAME, EXPR_DATA = 1, 1, 2
DATA_VALUE, DATA_VERDICT = 1, 2
VERDICT_CODE, VERDICT_CHAIN = 1, 2
USERDATA_COMMENT = 0  # NFTNL_UDATA_RULE_COMMENT, in the rule's user data TLVs (1-byte type, 1-byte len)

Attrs = list[tuple[int, bytes]]


class NetlinkError(Exception):
    def __init__(self, errno: int):
        self.errno = errno
        super().__init__(os.strerror(errno))


def attr(kind: int, payload: bytes | str) -> bytes:
    if isinstance(payload, str):
        payload = payload.encode() + b"\0"
    head = struct.pack("=HH", 4 + len(payload), kind)
    return head + payload + b"\0" * (-len(payload) % 4)


def nested(kind: int, *children: bytes) -> bytes:
    return attr(kind | NLA_F_NESTED, b"".join(children))


def parse(buf: bytes) -> Attrs:
    out, off = [], 0
    while off + 4 <= len(buf):
        length, kind = struct.unpack_from("=HH", buf, off)
        if length < 4:
            break
        out.append((kind & ~NLA_F_NESTED & 0x7FFF, buf[off + 4:off + length]))
        off += (length + 3) & ~3
    return out


def first(attrs: Attrs, kind: int) -> bytes | None:
    return next((p for k, p in attrs if k == kind), None)


def string(payload: bytes | None) -> str | None:
    return None if payload is None else payload.split(b"\0", 1)[0].decode(errors="replace")


def u32(payload: bytes | None) -> int | None:
    return None if payload is None else struct.unpack(">I", payload[:4])[0]


def u64(payload: bytes | None) -> int | None:
    return None if payload is None else struct.unpack(">Q", payload[:8])[0]


_libc = None
_switch = threading.Lock()


def _socket_in(netns: str | None) -> socket.socket:
    """A netfilter netlink socket in ``netns``: a socket belongs to the namespace it was made in,
    so only the creation happens there (this thread enters the namespace and comes back)."""
    if netns is None:
        return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    with _switch:
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{netns}", os.O_RDONLY)
        try:
            if _libc.setns(target, CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"setns {netns}")
            try:
                return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
            finally:
                if _libc.setns(home, CLONE_NEWNET) != 0:  # cannot stay in the wrong namespace
                    os.abort()
        finally:
            os.close(home)
            os.close(target)


def dump(netns: str | None, msg: int, attrs: bytes = b"", *, limit: int | None = None,
         count=lambda m: 1) -> tuple[list[Attrs], bool]:
    """One netlink dump of our family; returns (messages, complete). With ``limit`` the dump is
    abandoned once ``count`` over the messages read reaches it (``complete`` is then False):
    the kernel produces a dump a buffer at a time, so what is never read is never produced."""
    sock = _socket_in(netns)
    try:
        sock.settimeout(5)
        header = struct.pack("=BBH", NFPROTO_INET, 0, 0)
        body = header + attrs
        sock.send(struct.pack("=IHHII", 16 + len(body), NFNL_SUBSYS_NFTABLES << 8 | msg,
                              NLM_F_REQUEST | NLM_F_DUMP, 1, 0) + body)
        out: list[Attrs] = []
        seen = 0
        while True:
            data = sock.recv(1 << 20)
            off = 0
            while off + 16 <= len(data):
                length, kind, _, _, _ = struct.unpack_from("=IHHII", data, off)
                if kind == NLMSG_DONE:
                    return out, True
                if kind == NLMSG_ERROR:
                    errno = -struct.unpack_from("=i", data, off + 16)[0]
                    if errno:
                        raise NetlinkError(errno)
                else:
                    m = parse(data[off + 20:off + length])
                    out.append(m)
                    seen += count(m)
                off += (length + 3) & ~3
            if limit is not None and seen >= limit:
                return out, False
    finally:
        sock.close()
