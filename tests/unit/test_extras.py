"""Optional dependencies by role (connguard.extras, pyproject.toml): the table of import names
matches pyproject's extras, the core imports no extra's module, and a missing extra is named."""

import ast
import re
import tomllib
from pathlib import Path

import pytest

from connguard import extras

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
# distribution name -> import name, where they differ
IMPORT_NAME = {"prometheus-client": "prometheus_client", "swagger-ui-py": "swagger_ui", "pyyaml": "yaml"}
# packages that import extras at module level: only ever imported lazily by the core
SERVER_SIDE = ("connguard/db/", "connguard/server/", "connguard/cli/up_metrics.py")


def _dist(requirement: str) -> str:
    return re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0].lower()


def _import_name(requirement: str) -> str:
    dist = _dist(requirement)
    return IMPORT_NAME.get(dist, dist.replace("-", "_"))


@pytest.mark.parametrize("extra", sorted(extras.MODULES))
def test_table_matches_pyproject(extra):
    declared = sorted(_import_name(r) for r in PYPROJECT["project"]["optional-dependencies"][extra])
    assert sorted(extras.MODULES[extra]) == declared, f"[{extra}]: pyproject {declared}, extras.MODULES {extras.MODULES[extra]}"


def test_core_has_no_extras_dependency():
    core = {_import_name(r) for r in PYPROJECT["project"]["dependencies"]}
    in_extras = {m for mods in extras.MODULES.values() for m in mods}
    assert not core & in_extras, f"in both the core and an extra: {sorted(core & in_extras)}"


def _top_level_imports(path: Path) -> set[str]:
    """Modules imported at module level (not inside a function: those are the lazy ones)."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_core_modules_import_extras_lazily_only():
    """Outside the server side, no module imports an extra's module at module level (an agent
    host has none of them); the server side may, because only commands that checked
    extras.require import it."""
    offenders = []
    for path in sorted((ROOT / "src" / "connguard").rglob("*.py")):
        rel = path.relative_to(ROOT / "src").as_posix()
        if rel.startswith(SERVER_SIDE):
            continue
        bad = sorted(m for m in _top_level_imports(path) if extras.extra_of(m))
        if bad:
            offenders.append(f"{rel}: {bad}")
    assert not offenders, f"module-level imports of optional dependencies: {offenders}"


def test_missing_extra_names_the_extra_and_the_role():
    exc = extras.from_import_error(ModuleNotFoundError("No module named 'psycopg'", name="psycopg"), "connguard server")
    assert exc is not None and exc.extra == "postgresql", exc
    assert str(exc).startswith("connguard server needs connguard's 'postgresql' extra"), str(exc)
    assert "setup.sh --role server" in str(exc), str(exc)
    assert extras.from_import_error(ModuleNotFoundError("x", name="no_such_module"), "connguard x") is None


def test_require_refuses_a_module_that_is_not_there(monkeypatch):
    monkeypatch.setitem(extras.MODULES, "server", ("connguard_no_such_module_xyz",))
    with pytest.raises(extras.MissingExtra, match="no module named 'connguard_no_such_module_xyz'"):
        extras.require_for_db("sqlite://", "connguard up")
