"""The standalone agent: keeps a state file applied (the reconciler with the state file as its
source). See reconciler.py and DESIGN.md beside this file."""

from __future__ import annotations

import time
from pathlib import Path

from connguard.agent.reconciler import STATUS_HEARTBEAT, Reconciler
from connguard.agent.source import SETTLE_SECONDS, StateFileSource
from connguard.nft.executor import Executor

__all__ = ["SETTLE_SECONDS", "STATUS_HEARTBEAT", "StandaloneAgent"]


class StandaloneAgent(Reconciler):
    def __init__(self, state_file: str | Path, executor: Executor, workdir: Path, *,
                 interval: float = 1.0, drift_interval: float = 10.0, clock=time.time):
        self.state_file = Path(state_file)
        super().__init__(StateFileSource(self.state_file), executor, workdir, interval=interval,
                         drift_interval=drift_interval, clock=clock)

    @property
    def settle(self) -> float:
        """Seconds a changed state file must stay unchanged to be loaded (the source's)."""
        return self.source.settle
