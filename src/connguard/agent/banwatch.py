"""When the agent reads the kernel's ban sets whole: so that its idle cost does not grow with
the number of bans, and a flood of bans cannot make it expensive nor make it miss one.

Reading ``ban4/6`` and ``hostban4/6`` whole costs time that grows faster than the sets (a
netlink dump of a hash set restarts its walk for every buffer): read every pass, 100,000 bans
kept a core busy. The agent does not need that. Expiry is in the book; the bans the agent
places (restored, state file, server) it knows. What only the kernel knows is what the packet
path did, and what someone did to the sets behind the agent's back. Each pass therefore reads
only:

- the named counter ``bans_placed``, which every ban rule increments right after its
  ``add @ban`` (compiler/punishment.py): one small dump, whatever the number of bans;
- one buffer of each ban set the book expects non-empty (``expect``): an empty one was flushed.

and reads the ban sets whole (``due``) when:

- ``force``: the first pass, and after every full sync (restart, drift repair): the table may
  have lost anything;
- the counter moved (the kernel placed a ban), or is missing (a table from before it), or a set
  the book expects non-empty reads empty (a flush): at once, unless the last read ended less
  than ``1 / CHANGE_SHARE`` times its own cost ago. A flood of bans therefore gets at most
  ``CHANGE_SHARE`` of the agent's time, and misses none: every ban is in the kernel (the packet
  path placed it) and the next read sees every ban still there;
- otherwise every audit interval, ``cost / AUDIT_SHARE`` clamped to [``AUDIT_MIN``,
  ``AUDIT_MAX``]: a single ban element deleted by hand is restored within it.

The counter is read before the dump: a ban placed during a read moves it again and triggers
the next one. What a read cannot see is a ban placed and expired between two reads (only a ban
shorter than the gap, under a flood of bans on a host with very many): enforced all the same,
missing from the book and the reports.
"""

from __future__ import annotations

from dataclasses import dataclass, field

AUDIT_MIN = 3.0       # seconds: a small host audits its ban sets this often
AUDIT_MAX = 300.0     # seconds: no host goes longer without an audit
AUDIT_SHARE = 0.005   # audits take at most this share of the agent's time
CHANGE_SHARE = 0.05   # reads for new bans (a flood of them) take at most this share


@dataclass
class BanWatch:
    counter: int | None = None   # bans_placed as read before the last whole read
    read_at: float = float("-inf")  # when the last whole read ended (the agent's clock)
    cost: float = 0.0            # CPU seconds the last whole read took (the agent's thread)
    force: bool = True           # read at the next pass whatever the signals say
    # ban set -> until when the book knows it holds an element (None: an element without expiry):
    # after that it may be empty for good reasons, before that an empty set was flushed
    expect: dict[str, float | None] = field(default_factory=dict)
    reads: int = 0               # whole reads so far (tests, and the curious)

    def audit_interval(self) -> float:
        return min(AUDIT_MAX, max(AUDIT_MIN, self.cost / AUDIT_SHARE))

    def expected(self, now: float) -> list[str]:
        """The ban sets that must hold an element now (to be probed for a flush)."""
        return sorted(n for n, until in self.expect.items() if until is None or until - now > 1)

    def due(self, now: float, counter: int | None, flushed: bool) -> str | None:
        """Why the ban sets must be read whole now, or None."""
        if self.force:
            return "sync"
        since = now - self.read_at
        if counter is None or counter != self.counter or flushed:
            if since >= self.cost / CHANGE_SHARE:
                return "flushed" if flushed else "new bans"
            return None
        if since >= self.audit_interval():
            return "audit"
        return None

    def read(self, now: float, counter: int | None, cost: float, expect: dict[str, float | None]) -> None:
        """A whole read ended at ``now``; ``expect`` from what it found."""
        self.counter, self.read_at, self.cost, self.force = counter, now, cost, False
        self.expect = expect
        self.reads += 1

    def placed(self, name: str, until: float | None) -> None:
        """The agent put an element in ``name`` that lasts until ``until`` (None: for ever)."""
        held = self.expect.get(name, float("-inf"))
        if held is not None and (until is None or until > held):
            self.expect[name] = until
