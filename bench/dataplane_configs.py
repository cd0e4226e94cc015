"""Configurations for bench/dataplane_bench.py: connguard rulesets compiled by the working tree
or by another git revision and recorded for replay, the alternative formulations of a per-port
count (``--cap-forms``), and the perf figures (``--perf``)."""

from __future__ import annotations

import json
import os
import subprocess
import time

FORMS_TABLE = "cgforms"
HIGH_CONNECTIONS = 10_000_000
PERF_FREQ = 1999               # --perf sampling rate (Hz)
# --perf: kernel functions whose inclusive time is reported per connection
PERF_SYMBOLS = ("nft_do_chain_inet", "nf_conncount_add_skb", "nft_dynset_eval", "nft_lookup_eval", "nf_conntrack_in")


def ns_run(netns: str, argv: list[str], stdin: str | None = None, check: bool = True) -> str:
    p = subprocess.run(["ip", "netns", "exec", netns, *argv], input=stdin, capture_output=True,
                       text=True, timeout=300)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])}... in {netns}: {(p.stderr or p.stdout).strip()[:500]}")
    return p.stdout


# ============================================================================ recorded configurations
# Every connguard configuration is compiled and applied once, by the applier of the source tree
# it comes from, while its batches are recorded; each run then replays them on an empty ruleset.
# The recording side (Recorder, compile_and_record, ``_compile``) imports connguard from
# whatever PYTHONPATH says, so the same code serves the working tree and another revision.

class Recorder:
    """Executor wrapper: passes every call on and keeps what changed the kernel (batches that
    were not ``--check``, sysctls with the value each had before), for a verbatim replay."""

    def __init__(self, inner):
        self.inner = inner
        self.batches: list[dict] = []
        self.sysctls: dict[str, str] = {}
        self.sysctls_before: dict[str, str] = {}

    def batch(self, payload: dict, *, check: bool = False, **kw) -> None:
        self.inner.batch(payload, check=check, **kw)
        if not check:
            self.batches.append(payload)

    def sysctl(self, key: str, value: str) -> None:
        if key not in self.sysctls_before:
            self.sysctls_before[key] = read_sysctl(self.inner.netns, key)
        self.inner.sysctl(key, value)
        self.sysctls[key] = value

    def __getattr__(self, name):
        return getattr(self.inner, name)


def read_sysctl(netns: str, key: str) -> str:
    return ns_run(netns, ["sysctl", "-n", key]).strip()


def compile_and_record(state: dict, netns: str) -> dict:
    """Compile ``state`` with the connguard found on sys.path and apply it into ``netns`` (whose
    ruleset the caller has emptied), recording what the applier sent."""
    import connguard
    from connguard.compiler import compile_host
    from connguard.model import parse_state
    from connguard.nft import Applier, NftCli

    t = time.perf_counter()
    rs = compile_host(parse_state(state))
    t_compile = time.perf_counter() - t
    rec = Recorder(NftCli(netns))
    Applier(rec).apply(rs)
    sets = list(getattr(rs, "sets", ()))
    return {"batches": rec.batches, "sysctls": rec.sysctls, "sysctls_before": rec.sysctls_before,
            "compile_s": t_compile, "module": connguard.__file__,
            "commands": sum(len(b.get("nftables", ())) for b in rec.batches),
            "hit_sets": sorted(getattr(rs, "hit_sets", None) or ()),
            "remote_sets": [x.name for x in sets if x.name.startswith("r")
                            and tuple(getattr(x, "type", ())) == ("ifname", "ipv4_addr")]}


def run_compile(state_file: str, netns: str, out: str) -> None:
    with open(state_file) as fh:
        state = json.load(fh)
    res = compile_and_record(state, netns)
    with open(out, "w") as fh:
        json.dump(res, fh)


def export_rev(rev: str, dest: str) -> str:
    """``git archive`` the ``src`` of revision ``rev`` (of the repository holding this file) into
    ``dest``; returns the full commit id."""
    here = os.path.dirname(os.path.abspath(__file__))

    def git(*argv: str) -> str:
        p = subprocess.run(["git", "-C", here, *argv], capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit(f"--compare-rev {rev}: git {' '.join(argv)}: {p.stderr.strip()}")
        return p.stdout.strip()

    commit = git("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}")
    root = git("rev-parse", "--show-toplevel")
    arch = subprocess.run(["git", "-C", root, "archive", "--format=tar", commit, "src"], capture_output=True)
    if arch.returncode != 0:
        raise SystemExit(f"--compare-rev {rev}: git archive: {arch.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", dest], input=arch.stdout, check=True)
    if not os.path.isfile(os.path.join(dest, "src", "connguard", "__init__.py")):
        raise SystemExit(f"--compare-rev {rev}: {commit[:12]} has no src/connguard")
    return commit


def tree_description() -> str:
    """HEAD of the working tree, and whether src/ differs from it."""
    here = os.path.dirname(os.path.abspath(__file__))
    head = subprocess.run(["git", "-C", here, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--", "../src"], capture_output=True, text=True)
    if head.returncode != 0:
        return "not a git checkout"
    return f"HEAD {head.stdout.strip()}" + (" + uncommitted changes in src/" if dirty.stdout.strip() else "")


# --cap-forms K: K copies of one formulation of a per-port count (each copy its own set, so each
# copy does the full work) after `ct state established,related accept`, in a table of its own.
# Per copy, what a formulation costs on a new connection; `set-ctcount` is what conn_limit.py
# compiles, the others are the alternatives looked at (docs/benchmarks.md).
CAP_FORMS = {
    "set-ctcount": ("type ifname", "add @f{i} {{ oifname ct count over {n} }}"),
    "oif-ctcount": ("type iface_index", "add @f{i} {{ meta oif ct count over {n} }}"),
    "anon-ctcount": (None, "ct count over {n}"),
    "set-limit": ("type ifname", "add @f{i} {{ oifname limit rate over 1000000/second burst 1000000 packets }}"),
    "set-plain": ("type ifname", "update @f{i} {{ oifname }}"),
}


def cap_form_ruleset(form: str, k: int) -> str:
    set_type, rule = CAP_FORMS[form]
    sets = "".join(f"  set f{i} {{ {set_type}; size 65536; flags dynamic; }}\n" for i in range(k)) if set_type else ""
    rules = "".join(f"    ct state new {rule.format(i=i, n=HIGH_CONNECTIONS)}\n" for i in range(k))
    return (f"table inet {FORMS_TABLE} {{\n{sets}  chain forward {{\n    type filter hook forward priority -10; "
            f"policy accept;\n    ct state established,related accept\n{rules}  }}\n}}\n")


def perf_costs(data: str, conns: float) -> dict[str, float]:
    """Inclusive CPU time (ns per connection) of PERF_SYMBOLS in a ``perf record -g`` of the
    connector's process tree. The host forwards the client's packets in the sender's context
    (veth: the softirq runs when the connector's send enables bottom halves), so this is what the
    host's ruleset costs on the client's SYN, ACK and RST; the VM's SYN-ACK runs in the server's
    context and is not in it. CPU time, not wall time: other load on the machine slows the run
    but does not change these figures much."""
    rep = subprocess.run(["perf", "report", "-i", data, "--children", "--sort", "sym", "-q", "-n", "-g", "none"],
                         capture_output=True, text=True).stdout
    comms = subprocess.run(["perf", "report", "-i", data, "--stdio", "-q", "--sort", "comm", "-n", "-g", "none"],
                           capture_output=True, text=True).stdout
    total = sum(int(f[2]) for f in (ln.split() for ln in comms.splitlines()) if len(f) > 2 and f[2].isdigit())
    out = {s: 0.0 for s in PERF_SYMBOLS}
    for ln in rep.splitlines():
        f = ln.split()
        if len(f) >= 5 and f[4] in out and f[0].endswith("%"):
            out[f[4]] = float(f[0][:-1]) / 100 * total
    per = 1e9 / PERF_FREQ / max(conns, 1.0)
    return {"total": total * per, **{k: v * per for k, v in out.items()}}
