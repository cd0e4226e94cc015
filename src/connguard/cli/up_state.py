"""What ``connguard up`` keeps in its data directory: the lock that makes it one per directory,
and the tokens it reuses from one run to the next."""

from __future__ import annotations

import fcntl
import json
import logging
import os
from pathlib import Path
from typing import Any

import click

log = logging.getLogger("connguard.up")
PROJECT = "admin"           # the project of the tokens up creates (discovered ports land here)
TOKENS = "up-tokens.json"
LOCK = "up.lock"


class Lock:
    """``<data-dir>/up.lock``: flock held while up runs; the file says by which pid."""

    def __init__(self, data_dir: Path):
        self.path = data_dir / LOCK
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(self.fd, 32).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            alive = holder.isdigit() and os.path.exists(f"/proc/{holder}")
            raise click.ClickException(
                f"connguard up is already running with data directory {data_dir} "
                f"(pid {holder}{'' if alive else ', in another pid namespace?'}); stop it first "
                f"(Ctrl-C in its terminal, or kill {holder})") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        os.ftruncate(self.fd, 0)
        os.close(self.fd)  # closing drops the flock


def tokens(data_dir: Path, db_url: str, hosts: list[str]) -> dict[str, Any]:
    """The admin token and one agent token per host: reused when the database still knows
    them with that role (and host), else created; saved 0600 in the data directory."""
    from connguard.db.errors import Unauthenticated
    from connguard.db.services.tokens import authenticate, create_token
    from connguard.db.session import make_engine, migrate, session_factory

    path = data_dir / TOKENS
    try:
        saved = json.loads(path.read_text())
        if not isinstance(saved, dict):
            saved = {}
    except FileNotFoundError:
        saved = {}
    except (OSError, ValueError) as exc:
        log.warning("%s unreadable (%s): creating new tokens", path, exc)
        saved = {}
    engine = make_engine(db_url)
    try:
        migrate(engine)
        with session_factory(engine)() as session:
            def valid(secret: Any, role: str, host: str | None) -> bool:
                if not isinstance(secret, str):
                    return False
                try:
                    caller = authenticate(session, secret=secret)
                except Unauthenticated:  # expired: replaced like an unknown one
                    return False
                return caller is not None and caller.role == role and caller.host == host

            out: dict[str, Any] = {"admin": saved.get("admin"), "agents": dict(saved.get("agents") or {})}
            created = []
            if not valid(out["admin"], "admin", None):
                out["admin"] = create_token(session, project_id=PROJECT, role="admin",
                                            description="connguard up: admin")[0]
                created.append("admin")
            for host in hosts:
                if not valid(out["agents"].get(host), "agent", host):
                    out["agents"][host] = create_token(session, project_id=PROJECT, role="agent", host=host,
                                                       description=f"connguard up: agent of {host}")[0]
                    created.append(f"agent of {host}")
            session.commit()
    finally:
        engine.dispose()
    if created or out != saved:
        tmp = path.with_name(TOKENS + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(out, fh, indent=2)
        os.replace(tmp, path)
    log.info("tokens: %s", f"created {', '.join(created)}" if created else f"reused from {path}")
    return out
