"""Helper processes inside namespaces: start, read lines with a deadline, stop."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence

from connguard.exceptions import LabError
from connguard.lab import netns as nsx


class Proc:
    """A process in a namespace whose stdout lines can be awaited with a deadline.

    stdout and stderr are drained by two threads (so the child never blocks on a full pipe);
    stdout lines go to a queue, the last stderr lines are kept for error messages, and stderr
    lines starting with ``{"progress"`` are passed to ``on_stderr`` when given.
    """

    def __init__(self, argv: Sequence[str], *, stdin: bool = False,
                 on_stderr: Callable[[str], None] | None = None, what: str = "",
                 env: dict[str, str] | None = None, new_session: bool = False):
        self.what = what or " ".join(argv[4:7])
        self._group = new_session  # stop() then signals the whole process group
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.stderr_tail: deque[str] = deque(maxlen=20)
        self._on_stderr = on_stderr
        try:
            self.proc = subprocess.Popen(
                list(argv), stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
                env={**nsx.child_env(), **(env or {})}, start_new_session=new_session)
        except FileNotFoundError as exc:
            raise LabError(f"cannot start {argv[0]}: {exc}") from exc
        self._threads = [threading.Thread(target=self._pump_out, daemon=True),
                         threading.Thread(target=self._pump_err, daemon=True)]
        for t in self._threads:
            t.start()

    def _pump_out(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def _pump_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            line = line.rstrip("\n")
            if self._on_stderr is not None and line.startswith('{"progress"'):
                try:
                    self._on_stderr(line)
                except Exception:  # noqa: BLE001 - a progress printer must not kill the pump
                    pass
                continue
            self.stderr_tail.append(line)

    def error_text(self) -> str:
        tail = [line for line in self.stderr_tail if line.strip()]
        return tail[-1] if tail else f"exit status {self.proc.poll()}"

    def readline(self, timeout: float) -> str:
        """Next stdout line; LabError when the process ends or the deadline passes first."""
        try:
            line = self.lines.get(timeout=max(0.0, timeout))
        except queue.Empty:
            raise LabError(f"{self.what}: no answer within {timeout:.1f}s") from None
        if line is None:
            self.lines.put(None)
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
            raise LabError(f"{self.what} ended: {self.error_text()}")
        return line

    def wait_for(self, expected: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.readline(deadline - time.monotonic()).strip() == expected:
                return

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise LabError(f"{self.what} is gone: {self.error_text()}") from exc

    def close_stdin(self) -> None:
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def stop(self, grace: float = 3.0) -> int | None:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL. Returns the exit status."""
        self.close_stdin()
        if self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(timeout=5)
        if self._group:  # helpers the process left behind in its group
            self._signal(signal.SIGKILL)
        for t in self._threads:
            t.join(timeout=2)
        return self.proc.returncode

    def _signal(self, sig: int) -> None:
        try:
            if self._group:
                os.killpg(self.proc.pid, sig)
            else:
                self.proc.send_signal(sig)
        except (ProcessLookupError, PermissionError):
            pass

    def remaining_lines(self) -> list[str]:
        out = []
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return out
            if line is None:
                return out
            out.append(line)
