"""Fixtures of the functional tests (root, network namespaces, real traffic)."""

import pytest

from nsenforce import reset


@pytest.fixture(autouse=True)
def _fresh_connguard_state(request):
    """In modules that share one lab (``FRESH_CONNGUARD = True``), each test starts and ends
    without connguard's table or conntrack state in the lab host."""
    if not getattr(request.module, "FRESH_CONNGUARD", False):
        yield
        return
    lab = request.getfixturevalue("lab")
    reset(lab)
    yield
    reset(lab)
