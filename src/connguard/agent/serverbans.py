"""The server's bans on this host, a part of the reconciler's one ban pass (``Reconciler._bans``,
which owns the ban book and the kernel writes): every ban of the snapshot becomes its kernel
elements here, placed with its remaining time and recorded in the book (``server: true``, so a
flushed table gets it back); a later expiry in the snapshot (the server's cross-host
escalation) replaces the element with the longer timeout; a ban the snapshot no longer carries
(``connguard ban delete``) is deleted with its offender memory, but only one the server knows.
Run when the snapshot changed or the ban sets were read whole, never on an idle pass: it walks
every server ban and the whole book.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable

from connguard.agent.banbook import BanBook, BookBan
from connguard.agent.banwatch import BanWatch
from connguard.agent.source import Desired
from connguard.compiler import fragments as f
from connguard.compiler.ruleset import FAMILY, TABLE
from connguard.nft.bans import add_bans, ban_set, delete_ban

log = logging.getLogger("connguard.agent")


def _later(a: float | None, b: float | None, slack: float = 1.0) -> bool:
    """Expiry ``a`` is later than ``b`` (None: never expires)."""
    if a is None:
        return b is not None
    return b is not None and a > b + slack


def server_bans(desired: Desired, book: BanBook, watch: BanWatch, now: float,
                held: Callable[[tuple], bool]) -> tuple[list[dict], set[tuple]]:
    """The commands that make the kernel hold the snapshot's bans, and the keys placed.
    ``held(key)``: the kernel holds that (interface, remote) ban now. Only bans the server
    knows are lifted: a local detection the server has not answered yet stays."""
    if desired.revision is None:
        return [], set()  # not a server snapshot
    wanted: dict[tuple, tuple] = {}
    ending: set[tuple] = set()  # still in the snapshot, but the kernel's timeout ends them now
    for sb in desired.server_bans:
        if sb.expires_at is not None and sb.expires_at - now < 1:
            ending.update(sb.targets)
            continue
        for key in sb.targets:
            if key not in wanted or _later(sb.expires_at, wanted[key][0], 0):
                wanted[key] = (sb.expires_at, sb)
    cmds: list[dict] = []
    placed: set[tuple] = set()
    for key, (expires_at, sb) in wanted.items():
        ifname, ip = key
        known = book.bans.get(key)
        if known is not None and not _later(expires_at, known.expires_at) and (held(key) or known.server):
            if not known.server:
                known.server = True
                book.dirty = True
            continue  # the kernel holds it at least as long (or restore puts it back)
        if known is None:
            known = BookBan(ip, ifname, expires_at, sb.offence_count, "server", server=True)
            book.bans[key] = known
        else:
            if expires_at != known.expires_at:
                log.info("ban of %s on %s lengthened by the server to %s s (offence %d)", ip,
                         ifname or "all ports", "∞" if expires_at is None else int(expires_at - now),
                         sb.offence_count)
            known.expires_at, known.server = expires_at, True
            known.offence = max(known.offence, sb.offence_count)
        book.dirty = True
        if held(key):
            cmds.append(delete_ban(ip, ifname))  # an element's timeout is set when added
        cmds += add_bans([(ip, ifname, None if expires_at is None else int(expires_at - now))])
        watch.placed(ban_set(ip, ifname), expires_at)
        placed.add(key)
    lifted = 0
    for key, ban in list(book.bans.items()):
        if ban.server and key not in wanted:
            if key in ending and held(key):
                continue  # expiring by itself: a delete would end it early, or race the timeout
            if held(key):
                cmds.append(delete_ban(ban.ip_address, ban.interface_name))
            cmds += forget_memory(book, ban)
            del book.bans[key]
            book.dirty = True
            lifted += 1
    if placed or lifted:
        log.info("server bans: %d placed or lengthened, %d lifted (revision %s)", len(placed), lifted,
                 desired.revision)
    return cmds, placed


def forget_memory(book: BanBook, ban: BookBan) -> list[dict]:
    """A ban the operator deleted forgets that offence here too (the server does)."""
    if ban.interface_name is None:
        return []
    tail = f"|{ban.interface_name}|{ban.ip_address}"
    cmds = []
    for mkey in [k for k in book.memory if k.endswith(tail)]:
        name = mkey.split("|")[0]
        key = f.concat(ban.interface_name, str(ipaddress.ip_network(ban.ip_address).network_address))
        cmds.append({"delete": {"element": {"family": FAMILY, "table": TABLE, "name": name, "elem": [key]}}})
        del book.memory[mkey]
    return cmds
