"""Optional dependencies by role, and the error that names the one to install.

The core install (an agent host: ``connguard apply``, ``agent``, ``status``, ``lab`` and the
resource commands) has neither the server stack nor PostgreSQL's driver; pyproject.toml's
extras add them. Modules that need an extra import it lazily, inside the command that needs
it, so the core never imports them; when one is missing, the command says which extra to
install instead of ending on a traceback. ``MODULES`` must list every import name of every
extra's distributions (tests/unit/test_extras.py checks it against pyproject.toml).

This module imports nothing beyond the standard library and connguard.exceptions.
"""

from __future__ import annotations

import importlib.util

from connguard.exceptions import ConnguardError

# extra -> the top-level modules its distributions provide (distribution name in the comment
# where it differs)
MODULES: dict[str, tuple[str, ...]] = {
    "server": ("fastapi", "uvicorn", "sqlalchemy", "alembic",
               "swagger_ui"),        # swagger-ui-py
    "postgresql": ("psycopg",),
}
# which scripts/setup.sh role installs an extra
ROLE = {"server": "server", "postgresql": "server"}
# modules an extra brings in as dependencies of its own, that connguard imports directly
_TRANSITIVE = {"starlette": "server"}


class MissingExtra(ConnguardError):
    """A command needs an optional dependency that is not installed."""

    def __init__(self, what: str, extra: str, module: str):
        self.extra = extra
        self.module = module
        super().__init__(
            f"{what} needs connguard's '{extra}' extra, which is not installed here (no module "
            f"named {module!r}): run `bash scripts/setup.sh --role {ROLE[extra]}` in connguard's "
            f"source tree, or `pip install '.[{extra}]'` there with connguard's own pip")


def extra_of(module: str) -> str | None:
    """The extra that provides the top-level module of ``module`` (dotted name), if any."""
    top = module.split(".")[0]
    for extra, modules in MODULES.items():
        if top in modules:
            return extra
    return _TRANSITIVE.get(top)


def require(extra: str, what: str) -> None:
    """Raise MissingExtra unless every module of ``extra`` can be imported. Checked before a
    command does anything, so a missing extra changes nothing (no half-made data directory)."""
    for module in MODULES[extra]:
        if importlib.util.find_spec(module) is None:
            raise MissingExtra(what, extra, module)


def require_for_db(url: str, what: str) -> None:
    """The extras a database URL needs: the server's, and PostgreSQL's driver for postgresql."""
    require("server", what)
    if url.startswith("postgresql"):
        require("postgresql", what)


def from_import_error(exc: ModuleNotFoundError, what: str) -> MissingExtra | None:
    """The MissingExtra an import failure stands for; None if the module is not an extra's."""
    extra = extra_of(exc.name or "")
    return MissingExtra(what, extra, exc.name or "") if extra else None
