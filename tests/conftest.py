"""Shared fixtures. ``lab_factory`` builds namespace labs and always removes them."""

from __future__ import annotations

import os
import shutil

import pytest


def _netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root (network namespaces)"
    if not shutil.which("ip"):
        return "iproute2 is not installed"
    return None


@pytest.fixture
def lab_factory():
    """``lab_factory(vms=1, clients=1, sources=4)`` -> Lab; every lab is torn down after the
    test, whether it passed, failed or raised."""
    reason = _netns_unavailable()
    if reason:
        pytest.skip(reason)
    from connguard.lab import Lab

    labs: list[Lab] = []

    def make(**kw) -> Lab:
        kw.setdefault("vms", 1)
        kw.setdefault("clients", 1)
        kw.setdefault("sources", 4)
        lab = Lab.up(**kw)
        labs.append(lab)
        return lab

    try:
        yield make
    finally:
        for lab in labs:
            lab.down()


@pytest.fixture
def lab(lab_factory):
    """A small lab: 1 VM, 1 client with 4 extra source addresses."""
    return lab_factory()
