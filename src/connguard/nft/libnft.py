"""``NftLib``: the executor interface (executor.py) over libnftables in this process.

Why: the agent's loop sends several small batches and queries a second; each ``nft`` process
costs a fork, an exec and nft's start-up (bench/e2e_bench.py measures both side by side).
libnftables is the library the ``nft`` tool is a thin front of, so the JSON it accepts and the
messages it prints are the same. Its Python binding is Debian's python3-nftables (a ctypes
wrapper of libnftables.so.1, matching the installed nft); it lives in Debian's dist-packages,
which is not on a virtual environment's or pyenv's ``sys.path``, so ``load_binding`` imports
that one module file by path instead of adding all of dist-packages.

Namespaces: a netlink socket belongs to the network namespace its thread was in when it was
made, and libnftables may (re)open its socket at any call. So every call of one ``NftLib`` runs
on its own worker thread, which enters ``netns`` once and never leaves it: nothing this object
does can reach another namespace's ruleset, the root one included. The thread also serialises
the calls (a libnftables context is not thread-safe) and writes the namespace's sysctls
(``/proc/sys/net`` shows the namespace of the thread that opens it).
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import queue
import sys
import threading
from concurrent.futures import Future
from types import ModuleType

from connguard.exceptions import KernelUnavailable
from connguard.nft.executor import NftCli, NftFailure

CLONE_NEWNET = 0x40000000
# where Debian (and Ubuntu) install python3-nftables' module, whichever Python runs us
BINDING_PATHS = ("/usr/lib/python3/dist-packages/nftables/nftables.py",
                 "/usr/local/lib/python3/dist-packages/nftables/nftables.py")

_binding: ModuleType | None = None
_binding_lock = threading.Lock()


def load_binding(paths: tuple[str, ...] = BINDING_PATHS) -> ModuleType:
    """The python3-nftables module: an importable ``nftables`` (a venv built with
    --system-site-packages), else Debian's module file loaded by path; it needs only the
    standard library and libnftables.so.1. Raises KernelUnavailable saying what to install."""
    global _binding
    with _binding_lock:
        if _binding is not None:
            return _binding
        mod = None
        try:
            import nftables as mod  # type: ignore[import-not-found,no-redef]

            if not hasattr(mod, "Nftables"):
                mod = None  # some other package of that name
        except ImportError:
            pass
        for path in () if mod is not None else paths:
            if not os.path.exists(path):
                continue
            spec = importlib.util.spec_from_file_location("connguard._nftables_binding", path)
            assert spec is not None and spec.loader is not None
            mod = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = mod
            spec.loader.exec_module(mod)
            break
        if mod is None:
            raise KernelUnavailable("the libnftables Python binding is not installed "
                                    "(Debian: apt-get install python3-nftables)")
        try:
            mod.Nftables().get_json_output()  # loads libnftables.so.1: fail here, not at the first apply
        except OSError as exc:
            raise KernelUnavailable(f"libnftables could not be loaded ({exc})") from None
        _binding = mod
        return mod


class NftLib:
    """Same contract as ``NftCli``: ``batch`` raises NftFailure with nft's message, and nothing
    of a refused batch reaches the kernel (one batch is one netlink transaction)."""

    kind = "lib"

    def __init__(self, netns: str | None = None, *, binding: ModuleType | None = None):
        if netns is not None and not os.path.exists(f"/run/netns/{netns}"):
            raise KernelUnavailable(f"network namespace {netns!r} does not exist (ip netns list)")
        self.netns = netns
        self._mod = binding or load_binding()
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        started: Future = Future()
        self._thread = threading.Thread(target=self._serve, args=(started,), daemon=True,
                                        name=f"connguard-nft-{netns or 'host'}")
        self._thread.start()
        started.result()  # raises what entering the namespace raised

    # ---- the worker thread ---------------------------------------------------------------
    def _serve(self, started: Future) -> None:
        try:
            if self.netns is not None:
                libc = ctypes.CDLL(None, use_errno=True)
                fd = os.open(f"/run/netns/{self.netns}", os.O_RDONLY)
                try:
                    if libc.setns(fd, CLONE_NEWNET) != 0:
                        err = ctypes.get_errno()
                        raise KernelUnavailable(f"cannot enter network namespace {self.netns!r}: {os.strerror(err)}"
                                                + (" (connguard needs root / CAP_SYS_ADMIN)" if err == 1 else ""))
                finally:
                    os.close(fd)
            nft = self._mod.Nftables()
        except BaseException as exc:  # noqa: BLE001 - handed to the constructor
            started.set_exception(exc)
            return
        started.set_result(None)
        while True:
            call = self._calls.get()
            if call is None:
                return
            fn, args, done = call
            try:
                done.set_result(fn(nft, *args))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                done.set_exception(exc)

    def _call(self, fn, *args):
        if not self._thread.is_alive():
            raise KernelUnavailable("the libnftables worker has stopped")
        done: Future = Future()
        self._calls.put((fn, args, done))
        return done.result()

    def close(self) -> None:
        """End the worker thread (it keeps its namespace alive while it runs)."""
        if self._thread.is_alive():
            self._calls.put(None)
            self._thread.join(5)

    # ---- what runs there -----------------------------------------------------------------
    @staticmethod
    def _run(nft, text: str, *, check: bool = False, terse: bool = False) -> str:
        nft.set_json_output(True)  # also makes libnftables parse the input as JSON first
        nft.set_dry_run(check)
        nft.set_terse_output(terse)
        rc, out, err = nft.cmd(text)
        if rc != 0:
            err = (err or "").strip() or (out or "").strip() or f"libnftables returned {rc}"
            if "Operation not permitted" in err:
                raise KernelUnavailable(f"nft: {err} (connguard needs root / CAP_NET_ADMIN)")
            raise NftFailure(err)
        return out

    @staticmethod
    def _write_sysctl(nft, key: str, value: str) -> None:
        with open("/proc/sys/" + key.replace(".", "/"), "w") as fh:
            fh.write(value)

    # ---- the executor interface ----------------------------------------------------------
    def batch(self, payload: dict, *, check: bool = False) -> None:
        text = json.dumps(payload, separators=(",", ":"))
        self._call(lambda nft: self._run(nft, text, check=check))

    def query(self, *args: str, terse: bool = False) -> dict:
        out = self._call(lambda nft: self._run(nft, " ".join(args), terse=terse))
        return json.loads(out) if out.strip() else {"nftables": []}

    def sysctl(self, key: str, value: str) -> None:
        self._call(self._write_sysctl, key, value)

    def dump(self, msg: int, attrs: bytes = b"", *, limit: int | None = None,
             count=lambda m: 1) -> tuple[list, bool]:
        return NftCli.dump(self, msg, attrs, limit=limit, count=count)  # type: ignore[arg-type]


BACKENDS = ("auto", "lib", "cli")
ENV = "CONNGUARD_NFT_BACKEND"


def make_executor(netns: str | None = None, backend: str | None = None):
    """The executor for ``netns``: libnftables in-process when its binding is installed, else
    the ``nft`` tool. ``backend`` (or the CONNGUARD_NFT_BACKEND variable): ``auto`` (default),
    ``lib`` (fail when the binding is missing) or ``cli``."""
    backend = (backend or os.environ.get(ENV) or "auto").strip().lower()
    if backend not in BACKENDS:
        raise KernelUnavailable(f"{ENV}={backend!r}: expected one of {', '.join(BACKENDS)}")
    if backend == "cli":
        return NftCli(netns)
    if backend == "lib":
        return NftLib(netns)
    try:
        load_binding()
    except KernelUnavailable:
        return NftCli(netns)
    return NftLib(netns)
