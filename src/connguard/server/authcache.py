"""Who a token is, remembered briefly for the agent channel's long-polls.

Why: each answered long-poll is followed at once by the agent's next one, and each request
looked its token up in the database on a pool thread. After a cloud-wide ban reached 1,000
watching agents, their 1,000 new polls kept ~40 pool threads busy on those lookups, and the
event loop, waiting for the interpreter behind them, took seconds to send the answers
(docs/benchmarks.md, "End to end"). A lookup found here costs no thread.

Only tokens found valid are kept, for ``TTL`` seconds at most; a commit in this process that
deletes a token (``token revoke``) empties the cache, so a revocation through this server holds
at once, and one made elsewhere (another server process, ``token revoke --db``) within ``TTL``.
"""

from __future__ import annotations

import time

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from connguard.db.models import Token
from connguard.db.services.common import Caller

TTL = 10.0
MAX_ENTRIES = 100_000  # beyond it the cache starts again empty: memory stays bounded
_DELETED = "connguard_tokens_deleted"


class CallerCache:
    def __init__(self, ttl: float = TTL, clock=time.monotonic) -> None:
        self.ttl, self.clock = ttl, clock
        self._entries: dict[str, tuple[Caller, float]] = {}

    def get(self, token_hash: str) -> Caller | None:
        hit = self._entries.get(token_hash)
        if hit is None:
            return None
        if hit[1] <= self.clock():
            self._entries.pop(token_hash, None)
            return None
        return hit[0]

    def put(self, token_hash: str, caller: Caller) -> None:
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[token_hash] = (caller, self.clock() + self.ttl)

    def clear(self) -> None:
        self._entries.clear()

    def watch(self, sessions: sessionmaker[Session]) -> None:
        """Empty the cache after each commit that deleted a token."""
        def after_flush(session: Session, _ctx) -> None:
            if any(isinstance(o, Token) for o in session.deleted):
                session.info[_DELETED] = True

        def after_commit(session: Session) -> None:
            if session.info.pop(_DELETED, False):
                self.clear()

        event.listen(sessions, "after_flush", after_flush)
        event.listen(sessions, "after_commit", after_commit)
        event.listen(sessions, "after_rollback", lambda session: session.info.pop(_DELETED, None))
