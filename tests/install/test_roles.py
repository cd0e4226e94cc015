"""scripts/setup.sh --role agent: a virtual environment with the core only runs the agent-side
commands, has none of the server stack, and a server command names the extra to install.
Installs into a throwaway prefix (CONNGUARD_PREFIX, CONNGUARD_BIN_DIR), never /opt/connguard."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="setup.sh needs root (apt)")


@pytest.fixture(scope="module")
def agent_install(tmp_path_factory):
    base = tmp_path_factory.mktemp("role-agent")
    env = {**os.environ, "CONNGUARD_PREFIX": str(base / "venv"), "CONNGUARD_BIN_DIR": str(base / "bin")}
    env.pop("PYTHONPATH", None)  # the venv alone, not a source tree on the path
    proc = subprocess.run(["bash", "scripts/setup.sh", "--role", "agent"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"setup.sh --role agent exited {proc.returncode}: {proc.stderr[-2000:]}"
    yield base, env
    subprocess.run(["bash", "scripts/setup.sh", "--uninstall"], cwd=ROOT, env=env, capture_output=True, timeout=60)


def _run(base, env, *args):
    return subprocess.run([str(base / "bin" / "connguard"), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)


def test_core_has_no_server_stack(agent_install):
    base, env = agent_install
    code = "import importlib.util as u; print(' '.join(m for m in %r if u.find_spec(m)))" % (
        ("fastapi", "uvicorn", "sqlalchemy", "alembic", "psycopg", "prometheus_client", "pydantic", "httpx"),)
    # prometheus_client is the core's: the agent serves its own /metrics (--metrics-listen)
    out = subprocess.run([str(base / "venv" / "bin" / "python"), "-c", code], capture_output=True, text=True,
                         env=env, check=True).stdout.split()
    assert out == ["prometheus_client", "pydantic", "httpx"], f"importable in the agent role's venv: {out}"


def test_agent_commands_run_on_the_core(agent_install):
    base, env = agent_install
    dry = _run(base, env, "apply", "examples/state.yaml", "--dry-run")
    assert dry.returncode == 0 and '"nftables"' in dry.stdout, f"apply --dry-run exited {dry.returncode}: {dry.stderr}"
    helped = _run(base, env, "agent", "--help")
    assert helped.returncode == 0 and "Run the host agent" in helped.stdout, f"agent --help: {helped.stderr}"


@pytest.mark.parametrize("args,needs", [(["server"], "connguard server"), (["up", "--no-agent"], "connguard up"),
                                        (["token", "create", "--project", "a", "--role", "admin",
                                          "--db", "sqlite:////nonexistent/x.db"], "connguard token")])
def test_server_commands_name_the_extra(agent_install, args, needs):
    base, env = agent_install
    proc = _run(base, env, *args)
    want = f"Error: {needs} needs connguard's 'server' extra, which is not installed here"
    assert proc.returncode == 1 and proc.stderr.startswith(want), f"exit {proc.returncode}: {proc.stderr[-600:]}"
    assert "setup.sh --role server" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-600:]


def test_uninstall_removes_the_venv_and_the_link(tmp_path):
    env = {**os.environ, "CONNGUARD_PREFIX": str(tmp_path / "venv"), "CONNGUARD_BIN_DIR": str(tmp_path / "bin")}
    (tmp_path / "venv").mkdir()
    (tmp_path / "venv" / "keep").write_text("not a venv")
    proc = subprocess.run(["bash", "scripts/setup.sh", "--uninstall"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1 and "is not a virtual environment: not removing it" in proc.stderr, proc.stderr
    assert (tmp_path / "venv" / "keep").exists(), "setup.sh --uninstall removed a directory that was not its venv"
