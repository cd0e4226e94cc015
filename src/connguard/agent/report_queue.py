"""The reporter's on-disk queue: reports made while the server is unreachable, delivered in
order after reconnect. Bounded (``max_reports`` and ``max_bytes``): beyond it the oldest report
is dropped and counted (``overflow_total``, itself reported). Each report is one file written
atomically, so an agent killed mid-write loses at most that report, never the queue."""

from __future__ import annotations

import json
import os
from pathlib import Path

from connguard.agent.server_source import write_atomic

MAX_REPORTS = 1000
MAX_BYTES = 64 * 1024 * 1024


class ReportQueue:
    def __init__(self, directory: Path, *, max_reports: int = MAX_REPORTS, max_bytes: int = MAX_BYTES):
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.max_reports, self.max_bytes = max_reports, max_bytes
        self._files = sorted(p for p in self.dir.glob("*.json") if p.stem.isdigit())
        self._sizes = {p: p.stat().st_size for p in self._files}
        self._seq = int(self._files[-1].stem) + 1 if self._files else 0
        try:
            self.overflow_total = int((self.dir / "overflow").read_text())
        except (OSError, ValueError):
            self.overflow_total = 0

    def __len__(self) -> int:
        return len(self._files)

    def put(self, report: dict) -> None:
        data = json.dumps(report, separators=(",", ":")).encode()
        path = self.dir / f"{self._seq:012d}.json"
        self._seq += 1
        write_atomic(path, data)
        self._files.append(path)
        self._sizes[path] = len(data)
        dropped = 0
        while len(self._files) > self.max_reports or (len(self._files) > 1 and sum(self._sizes.values()) > self.max_bytes):
            self._remove(self._files[0])
            dropped += 1
        if dropped:
            self.overflow_total += dropped
            write_atomic(self.dir / "overflow", str(self.overflow_total).encode())

    def peek(self) -> tuple[Path, dict] | None:
        while self._files:
            path = self._files[0]
            try:
                return path, json.loads(path.read_bytes())
            except (OSError, ValueError):
                self._remove(path)  # unreadable (a disk fault): nothing to deliver
        return None

    def pop(self, path: Path) -> None:
        self._remove(path)

    def _remove(self, path: Path) -> None:
        self._files.remove(path)
        self._sizes.pop(path, None)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
