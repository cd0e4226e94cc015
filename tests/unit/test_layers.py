"""Layer contracts (STYLE.md 18): import-linter checks the contracts in pyproject.toml
([tool.importlinter]) against this checkout's src/; a contract known to be false proves the check
is not vacuous; and what `connguard status` imports at run time (which import-linter cannot see:
it does not follow a package's __init__) is checked by importing it."""

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"


def _lint_imports(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("lint-imports")
    cmd = [str(exe)] if exe.exists() else [shutil.which("lint-imports") or "lint-imports"]
    env = dict(os.environ, PYTHONPATH=str(SRC))  # the checkout under test, not another install
    return subprocess.run([*cmd, "--no-cache", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)


def test_layer_contracts_are_kept():
    out = _lint_imports()
    assert out.returncode == 0, f"lint-imports exited {out.returncode}:\n{out.stdout[-4000:]}{out.stderr[-2000:]}"
    assert "0 broken" in out.stdout, out.stdout[-2000:]


def test_a_broken_contract_is_reported(tmp_path):
    """The CLI imports the nft backend: a contract that forbids it must fail, naming the chain."""
    cfg = tmp_path / "broken.ini"
    cfg.write_text(textwrap.dedent("""\
        [importlinter]
        root_package = connguard

        [importlinter:contract:false]
        name = a contract that does not hold
        type = forbidden
        source_modules = connguard.cli.status
        forbidden_modules = connguard.nft
        """))
    out = _lint_imports("--config", str(cfg))
    assert out.returncode != 0, f"a false contract passed:\n{out.stdout[-2000:]}"
    assert "connguard.cli.status is not allowed to import connguard.nft" in out.stdout, out.stdout[-2000:]


def test_reading_the_kernel_imports_no_model():
    """What `connguard status` and `connguard ban delete --netns` import to read the kernel:
    no pydantic (it cost most of status's start-up), no HTTP client, no database."""
    code = ("import sys\n"
            "from connguard.cli import status, unban_local, netns_info\n"
            "from connguard.agent.statusfile import writer_running\n"
            "from connguard.agent.banbook import BanBook\n"
            "from connguard.nft import NftCli, observe\n"
            "from connguard.nft.bans import delete_ban\n"
            "print('\\n'.join(sorted(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(SRC)),
                         capture_output=True, text=True, check=True)
    mods = set(out.stdout.split())
    heavy = sorted(m for m in mods if m.split(".")[0] in ("pydantic", "httpx", "sqlalchemy", "yaml", "fastapi")
                   or m.startswith(("connguard.model", "connguard.compiler.compile", "connguard.db")))
    assert not heavy, f"reading the kernel imported {len(heavy)} heavy modules, e.g. {heavy[:6]}"
