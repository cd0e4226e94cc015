"""Python's cyclic garbage collector paused while a large snapshot is turned into a ruleset.

Why: parsing a 10,000-port snapshot, validating it and compiling it allocate millions of
objects that all stay alive until the step ends, and the collector runs again and again over
them, finding nothing to free (reference counting frees them afterwards); a profile of these
steps charged trivial functions with its passes. The pause lasts one step, not the process;
the collector runs again after it.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_depth = 0  # nested or concurrent pauses (source thread and reconciler): enable after the last
_was_enabled = True


@contextmanager
def gc_paused() -> Iterator[None]:
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _was_enabled:
                gc.enable()
