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


def _kinds():
    from connguard.exceptions import KernelUnavailable
    from connguard.nft.libnft import load_binding

    try:
        load_binding()
        lib = pytest.param("lib")
    except KernelUnavailable as exc:
        lib = pytest.param("lib", marks=pytest.mark.skip(reason=str(exc)))
    return ["cli", lib]


@pytest.fixture(params=_kinds())
def nft_executor(request):
    """A factory ``nft_executor(netns)`` of the executor under test: the ``nft`` tool (``cli``)
    or libnftables in-process (``lib``); tests taking it run once with each."""
    from connguard.nft.libnft import make_executor

    made = []

    def make(netns):
        ex = make_executor(netns, request.param)
        assert ex.kind == request.param, (ex, request.param)
        made.append(ex)
        return ex

    yield make
    for ex in made:
        if hasattr(ex, "close"):
            ex.close()  # the worker thread holds its namespace alive until it ends
