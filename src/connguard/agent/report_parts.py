"""Split one report into bounded parts (issue 6: a 10,000-port host must not send megabytes
at once).

A delta is cut into parts of at most ``PART_PORTS`` ports and ``PART_INTERFACES`` interfaces;
each part is a delta of its own. A full report is cut the same way, and each part says which
slice of the host it replaces (``part.ports`` and ``part.interfaces``: the ids, or the names,
sorted as Python sorts strings, after ``after`` and up to ``until``; ``null`` for an open end),
so the server replaces its view slice by slice: a part that is lost or refused leaves only its
slice stale until the next full report, and no part depends on another having arrived.
Heartbeat, conntrack, apply and queue travel in every part (they are small and idempotent);
bans and ``interfaces_gone`` in the first.
"""

from __future__ import annotations

PART_PORTS = 500        # about 280 KB of JSON with four rules per port
PART_INTERFACES = 2000  # about 150 KB with two addresses each

_SLICED = ("ports", "interfaces", "interfaces_gone", "bans", "part")


def _chunks(items: list, n: int) -> list[list]:
    return [items[i:i + n] for i in range(0, len(items), n)]


def _ranges(chunks: list[list], key: str) -> list[dict]:
    """(after, until] of each chunk of a sorted list; the first opens at the bottom, the last at
    the top, so together they cover every id, the ones the agent does not know included."""
    out, after = [], None
    for i, chunk in enumerate(chunks):
        until = None if i == len(chunks) - 1 else chunk[-1][key]
        out.append({"after": after, "until": until})
        after = until
    return out


def split(report: dict, *, ports: int = PART_PORTS, interfaces: int = PART_INTERFACES) -> list[dict]:
    plist = sorted(report.get("ports", []), key=lambda p: p["port_id"])
    ilist = report.get("interfaces")
    ilist = None if ilist is None else sorted(ilist, key=lambda i: i["name"])
    if len(plist) <= ports and (ilist is None or len(ilist) <= interfaces):
        return [report]
    pchunks = _chunks(plist, ports) or [[]]
    ichunks = (_chunks(ilist, interfaces) or [[]]) if ilist is not None else []
    count = max(len(pchunks), len(ichunks))
    full = bool(report.get("full"))
    prange = _ranges(pchunks, "port_id")
    irange = _ranges(ichunks, "name")
    common = {k: v for k, v in report.items() if k not in _SLICED}
    parts = []
    for k in range(count):
        part = dict(common)
        part["ports"] = pchunks[k] if k < len(pchunks) else []
        if ilist is not None and k < len(ichunks):
            part["interfaces"] = ichunks[k]
        if k == 0:
            for key in ("bans", "interfaces_gone"):
                if report.get(key):
                    part[key] = report[key]
        if full:
            # a slice past the last chunk of one kind says nothing of that kind
            part["part"] = {"index": k, "count": count,
                            "ports": prange[k] if k < len(prange) else None,
                            "interfaces": irange[k] if k < len(irange) else None}
        parts.append(part)
    return parts
