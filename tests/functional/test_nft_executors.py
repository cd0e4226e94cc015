"""Both executors (the ``nft`` tool and libnftables in-process) against a real namespace: the
same ruleset lands the same way, a refused batch changes nothing and says why, ``check`` changes
nothing, sysctls and batches reach only the namespace asked for, and the choice between them is
automatic with an override."""

import subprocess

import pytest

from connguard.compiler import compile_host
from connguard.exceptions import KernelUnavailable
from connguard.model import parse_state
from connguard.nft import Applier, NftCli, NftFailure, NftLib, make_executor, observe
from connguard.nft import libnft
from nsenforce import private_netns

pytestmark = pytest.mark.netns

STATE = {
    "policies": [{"name": "web", "rules": [
        {"type": "connection_rate_limit", "direction": "ingress", "scope": "remote_ip", "max_cps": 20},
        {"type": "connection_limit", "direction": "ingress", "scope": "remote_ip", "max_connections": 50},
        {"type": "brute_force", "profile": "ssh"}]}],
    "ports": [{"interface_name": f"tapweb{i}", "fixed_ips": [f"10.0.0.{i + 5}"], "policy": "web"} for i in range(20)],
    "bans": [{"ip_address": "203.0.113.9", "interface_name": "tapweb1", "seconds": 600}],
}


@pytest.fixture
def netns():
    yield from private_netns("cgex")


@pytest.fixture
def netns2():
    yield from private_netns("cgex")


def ruleset(ns) -> str:
    return subprocess.run(["ip", "netns", "exec", ns, "nft", "list", "ruleset"],
                          capture_output=True, text=True, check=True).stdout


def root_tables() -> str:
    return subprocess.run(["nft", "list", "tables"], capture_output=True, text=True, check=True).stdout


def _stable(text: str) -> str:
    # ban timeouts count down between the two listings
    return "\n".join(line for line in text.splitlines() if "expires" not in line)


def test_both_executors_load_the_same_ruleset(netns, netns2, nft_executor):
    """The executor under test in one namespace, the nft tool in another: the kernel holds the
    same ruleset, and reading it back through either gives the same observation."""
    rs = compile_host(parse_state(STATE))
    roots = root_tables()
    ex = nft_executor(netns)
    Applier(ex).apply(rs)
    Applier(NftCli(netns2)).apply(rs)
    assert _stable(ruleset(netns)) == _stable(ruleset(netns2))
    assert "tapweb19" in ruleset(netns)
    mine, ref = observe(ex), observe(NftCli(netns2))
    assert [(b.ip_address, b.interface_name) for b in mine.bans] == [("203.0.113.9", "tapweb1")], mine.bans
    assert [(b.ip_address, b.interface_name) for b in mine.bans] == [(b.ip_address, b.interface_name) for b in ref.bans]
    assert root_tables() == roots, "the root namespace's ruleset changed"


def test_refused_batch_changes_nothing_and_says_what_nft_says(netns, nft_executor):
    ex = nft_executor(netns)
    Applier(ex).apply(compile_host(parse_state(STATE)))
    before = _stable(ruleset(netns))
    bad = {"nftables": [{"add": {"element": {"family": "inet", "table": "connguard", "name": "ports",
                                             "elem": ["tapnew"]}}},
                        {"add": {"rule": {"family": "inet", "table": "connguard", "chain": "no_such_chain",
                                          "expr": [{"accept": None}]}}}]}
    with pytest.raises(NftFailure) as info:
        ex.batch(bad)
    assert "No such file or directory" in info.value.message, info.value.message
    assert _stable(ruleset(netns)) == before, "a refused batch left something behind"
    with pytest.raises(NftFailure) as cli_info:
        NftCli(netns).batch(bad)
    assert info.value.message == cli_info.value.message


def test_check_changes_nothing(netns, nft_executor):
    ex = nft_executor(netns)
    before = ruleset(netns)
    Applier(ex).apply(compile_host(parse_state(STATE)), check=True)
    assert ruleset(netns) == before == "", before
    with pytest.raises(NftFailure):
        ex.batch({"nftables": [{"add": {"chain": {"family": "inet", "table": "absent", "name": "x"}}}]}, check=True)


def test_sysctl_reaches_only_the_namespace(netns, nft_executor):
    key = "net.netfilter.nf_conntrack_tcp_loose"
    path = "/proc/sys/net/netfilter/nf_conntrack_tcp_loose"
    root_before = open(path).read().strip()
    ex = nft_executor(netns)
    ex.batch({"nftables": [{"add": {"table": {"family": "inet", "name": "connguard"}}}]})  # loads nf_conntrack here too
    want = "0" if root_before == "1" else "1"
    ex.sysctl(key, want)
    got = subprocess.run(["ip", "netns", "exec", netns, "sysctl", "-n", key], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert got == want, f"namespace {key} = {got}, wanted {want}"
    assert open(path).read().strip() == root_before, "the root namespace's sysctl changed"


def test_lib_query_is_much_cheaper_than_a_process(netns):
    """The point of the in-process executor (the figures are bench/e2e_bench.py's)."""
    import time

    lib, cli = NftLib(netns), NftCli(netns)
    try:
        def per_call(ex, n=20):
            ex.query("list", "tables")
            t = time.perf_counter()
            for _ in range(n):
                ex.query("list", "tables")
            return (time.perf_counter() - t) / n
        t_lib, t_cli = per_call(lib), per_call(cli)
        assert t_lib * 3 < t_cli, f"libnftables {t_lib * 1e3:.2f} ms vs nft process {t_cli * 1e3:.2f} ms per query"
    finally:
        lib.close()


def test_selection_is_automatic_with_an_override(monkeypatch, netns):
    monkeypatch.delenv(libnft.ENV, raising=False)
    auto = make_executor(netns)
    assert auto.kind == "lib"  # python3-nftables is installed on this machine (scripts/setup.sh)
    auto.close()
    monkeypatch.setenv(libnft.ENV, "cli")
    assert isinstance(make_executor(netns), NftCli)
    monkeypatch.setenv(libnft.ENV, "nft-lib")
    with pytest.raises(KernelUnavailable, match=r"CONNGUARD_NFT_BACKEND='nft-lib': expected one of auto, lib, cli"):
        make_executor(netns)
    # no binding: auto falls back to the nft tool; asking for lib says what to install
    monkeypatch.delenv(libnft.ENV)

    def missing():
        raise KernelUnavailable("the libnftables Python binding is not installed (Debian: apt-get install python3-nftables)")
    monkeypatch.setattr(libnft, "load_binding", missing)
    assert isinstance(make_executor(netns), NftCli)
    with pytest.raises(KernelUnavailable, match="apt-get install python3-nftables"):
        make_executor(netns, "lib")


def test_load_binding_by_path_reports_what_is_missing(tmp_path, monkeypatch):
    monkeypatch.setattr(libnft, "_binding", None)
    monkeypatch.setitem(__import__("sys").modules, "nftables", None)  # no importable nftables
    with pytest.raises(KernelUnavailable, match="python3-nftables"):
        libnft.load_binding((str(tmp_path / "absent.py"),))
    mod = libnft.load_binding()
    assert mod.__name__ == "connguard._nftables_binding" and hasattr(mod, "Nftables")


def test_lib_executor_for_a_missing_namespace_is_a_clear_error():
    with pytest.raises(KernelUnavailable, match="'cg-no-such-ns' does not exist"):
        NftLib("cg-no-such-ns")
