"""Result dataclasses of the lab's traffic tools."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FloodSecond:
    t: int
    admitted: int = 0
    refused: int = 0
    timeout: int = 0
    error: int = 0

    @property
    def attempted(self) -> int:
        return self.admitted + self.refused + self.timeout + self.error


@dataclass
class FloodResult:
    """Outcome of a connection flood. ``series[t]`` counts attempts *started* in second t."""

    target: str
    port: int
    rate: float
    duration: float
    attempted: int
    admitted: int
    refused: int
    timeout: int
    error: int
    offered_rate: float
    series: list[FloodSecond]
    sources: list[str] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    workers: int = 1
    max_lag: float = 0.0
    raw: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FloodResult:
        return cls(d["target"], d["port"], d["rate"], d["duration"], d["attempted"],
                   d["admitted"], d["refused"], d["timeout"], d["error"], d["offered_rate"],
                   [FloodSecond(**s) for s in d["series"]], d.get("sources", []),
                   d.get("errors", {}), d.get("workers", 1), d.get("max_lag", 0.0), d)

    def _window(self, skip: float) -> list[FloodSecond]:
        full = math.floor(self.duration + 1e-9)  # the last partial second is left out
        return [s for s in self.series if s.t >= skip and s.t < full]

    def admitted_rate(self, skip: float = 1.0) -> float:
        """Admitted connections per second after the first ``skip`` seconds (the burst)."""
        window = self._window(skip)
        return sum(s.admitted for s in window) / len(window) if window else 0.0

    def refused_rate(self, skip: float = 1.0) -> float:
        window = self._window(skip)
        return sum(s.refused for s in window) / len(window) if window else 0.0

    def dropped_rate(self, skip: float = 1.0) -> float:
        """Attempts per second that got no answer (dropped SYNs) after ``skip`` seconds."""
        window = self._window(skip)
        return sum(s.timeout for s in window) / len(window) if window else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.raw)
        d.pop("series", None)
        d["series"] = [s.__dict__ for s in self.series]
        return d


@dataclass
class BruteForceAttempt:
    index: int
    start: float
    outcome: str  # connected | refused | timeout | error
    banner: str = ""


@dataclass
class BruteForceResult:
    target: str
    port: int
    attempts: list[BruteForceAttempt]
    elapsed: float

    def count(self, outcome: str) -> int:
        return sum(1 for a in self.attempts if a.outcome == outcome)

    @property
    def connected(self) -> int:
        return self.count("connected")

    @property
    def refused(self) -> int:
        return self.count("refused")

    @property
    def timeout(self) -> int:
        return self.count("timeout")

    @property
    def banners(self) -> int:
        """Attempts in which the service's banner was read."""
        return sum(1 for a in self.attempts if a.banner)


@dataclass
class SynFloodResult:
    target: str
    port: int
    duration: float
    sent: int | None  # packets hping3 reports as transmitted (None when it did not say)
    output: str = ""
