"""Database upgrades under control: ``connguard db upgrade|check|current`` (exit codes and
messages), migrations serialised by a lock (processes released at one instant on an empty
database: one migrates, the others find it done), and servers started at the same moment on an
empty PostgreSQL database both coming up."""

from __future__ import annotations

import multiprocessing
import subprocess
import time

import httpx
import pytest
from apitest import CLI, free_port, pg_url
from sqlalchemy import text

from connguard.db.schema import UPGRADE_HINT, _script
from connguard.db.scratch import temporary_database
from connguard.db.session import make_engine, migrate, schema_status

SCRIPT = _script()
HEAD = SCRIPT.get_current_head()
ALL = [s.revision for s in reversed(list(SCRIPT.walk_revisions()))]  # oldest first


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'u.db'}"
        return
    url = pg_url()
    if not url:
        pytest.skip("CONNGUARD_TEST_PG_URL not set")
    with temporary_database(url, "connguard_dbaudit") as scratch:
        yield scratch


def _db(*args: str, url: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "db", *args, "--db", url], capture_output=True, text=True, timeout=120)


def _set_revision(url: str, revision: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    engine.dispose()


def test_db_check_current_and_upgrade(empty_db):
    r = _db("check", url=empty_db)
    assert (r.returncode, r.stdout) == (3, ""), r
    assert r.stderr == (f"Error: the database has no connguard schema (this connguard's is at revision "
                        f"{HEAD!r}): {UPGRADE_HINT}\n"), r.stderr
    r = _db("current", url=empty_db)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "the database has no connguard schema\n"), r

    engine = make_engine(empty_db)
    migrate(engine, revision="0003")
    engine.dispose()
    behind = ALL[ALL.index("0003") + 1:]
    r = _db("check", url=empty_db)
    assert r.returncode == 3 and r.stderr == (
        f"Error: the database schema is at revision '0003', behind this connguard's {HEAD!r} "
        f"({len(behind)} to apply: {', '.join(behind)}): {UPGRADE_HINT}\n"), r
    assert _db("current", url=empty_db).stdout == "0003\n"

    r = _db("upgrade", url=empty_db)
    assert r.returncode == 0, r
    lines = r.stdout.splitlines()
    assert lines[0] == f"Upgrading {empty_db}", lines
    steps = [line.split("  ")[1] for line in lines[1:-1]]  # "  0003 -> 0004  title  (0.01 s)"
    assert steps == [f"{a} -> {b}" for a, b in zip(["0003", *behind], behind)], lines
    for line, rev in zip(lines[1:-1], behind):
        assert f"  {SCRIPT.get_revision(rev).doc.strip()}  (" in line and line.endswith(" s)"), line
    assert lines[-1] == f"OK: the database is at revision {HEAD} (head), {len(behind)} revisions applied", lines

    r = _db("check", url=empty_db)
    assert (r.returncode, r.stdout, r.stderr) == (
        0, f"OK: the database is at revision {HEAD}, this connguard's head\n", ""), r
    assert _db("current", url=empty_db).stdout == f"{HEAD} (head)\n"
    r = _db("upgrade", url=empty_db)
    assert r.returncode == 0 and r.stdout.splitlines()[-1] == (
        f"OK: the database is at revision {HEAD} (head), nothing to do"), r

    _set_revision(empty_db, "f00dfeed")
    newer = (f"Error: the database schema is at revision 'f00dfeed', newer than this connguard (which knows "
             f"up to {HEAD!r}); upgrade connguard or use another database\n")
    for cmd in ("check", "upgrade"):
        r = _db(cmd, url=empty_db)
        assert (r.returncode, r.stderr) == (4, newer), (cmd, r)
    assert _db("current", url=empty_db).stdout.startswith("f00dfeed (unknown to this connguard")


def test_db_check_on_a_database_that_cannot_be_opened(tmp_path):
    url = "postgresql+psycopg://nobody:secret@127.0.0.1:1/x"
    r = _db("check", url=url)
    assert r.returncode == 1 and r.stderr.startswith(
        "Error: cannot open the database postgresql+psycopg://nobody:***@127.0.0.1:1/x: "), r
    assert "secret" not in r.stderr and "Traceback" not in r.stderr


def _migrate_at(url: str, barrier, out) -> None:  # noqa: ANN001 - multiprocessing objects
    engine = make_engine(url)
    barrier.wait()
    try:
        out.put(("ok", migrate(engine).pending))
    except Exception as exc:  # noqa: BLE001 - what failed is the result
        out.put(("error", f"{type(exc).__name__}: {exc}"[:300]))
    finally:
        engine.dispose()


def test_migrations_started_at_one_instant_run_once(empty_db):
    """Three processes released by one barrier on an empty database (without the lock, every
    run of this on PostgreSQL failed with UniqueViolation on alembic_version): one applies
    every revision, the others wait for it and find nothing to do."""
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(3), ctx.Queue()
    procs = [ctx.Process(target=_migrate_at, args=(empty_db, barrier, out)) for _ in range(3)]
    for p in procs:
        p.start()
    results = sorted((out.get(timeout=120) for _ in procs), key=lambda r: -len(r[1]))
    for p in procs:
        p.join(30)
    assert results == [("ok", tuple(ALL)), ("ok", ()), ("ok", ())], results
    engine = make_engine(empty_db)
    assert schema_status(engine).state == "current"
    engine.dispose()


def _start(url: str, port: int, log, *extra: str) -> subprocess.Popen:  # noqa: ANN001
    return subprocess.Popen([*CLI, "server", "--db", url, "--bind", f"127.0.0.1:{port}", "--log-level", "warning",
                             *extra], stdout=log, stderr=subprocess.STDOUT)


def test_two_servers_started_at_once_on_an_empty_postgresql_database_both_come_up(tmp_path):
    url = pg_url()
    if not url:
        pytest.skip("CONNGUARD_TEST_PG_URL not set")
    with temporary_database(url, "connguard_dbaudit") as scratch:
        # the default on PostgreSQL: refuse, naming the command that upgrades
        r = subprocess.run([*CLI, "server", "--db", scratch, "--bind", "127.0.0.1:1"], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 1 and r.stderr == (
            f"Error: the database has no connguard schema (this connguard's is at revision {HEAD!r}): "
            f"{UPGRADE_HINT}\n"), r
        ports = [free_port(), free_port()]
        logs = [open(tmp_path / f"s{i}.log", "w") for i in range(2)]
        procs = [_start(scratch, port, log, "--migrate") for port, log in zip(ports, logs)]
        try:
            up: dict[int, float] = {}
            started = time.monotonic()
            while len(up) < 2 and time.monotonic() - started < 60:
                for port, proc in zip(ports, procs):
                    assert proc.poll() is None, (tmp_path / f"s{ports.index(port)}.log").read_text()
                    if port in up:
                        continue
                    try:
                        if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                            up[port] = time.monotonic() - started
                    except httpx.HTTPError:
                        pass
                time.sleep(0.1)
            assert len(up) == 2, f"only {len(up)} of 2 servers answered within 60 s"
            print("both servers answered after (s): " + ", ".join(f"{up[p]:.2f}" for p in ports))
            for port in ports:  # and both serve the API over the migrated schema
                r = httpx.get(f"http://127.0.0.1:{port}/v2.0/qos/policies", timeout=5)
                assert r.status_code == 401 and r.json()["NeutronError"]["type"] == "NotAuthenticated", r.text
            engine = make_engine(scratch)
            assert schema_status(engine).current == HEAD
            engine.dispose()
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(15)
            for log in logs:
                log.close()


def test_server_migrates_sqlite_by_default_and_refuses_with_no_migrate(tmp_path):
    url = f"sqlite:///{tmp_path / 'n.db'}"
    r = subprocess.run([*CLI, "server", "--db", url, "--bind", "127.0.0.1:1", "--no-migrate"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1 and "the database has no connguard schema" in r.stderr and UPGRADE_HINT in r.stderr, r
    port = free_port()
    with open(tmp_path / "s.log", "w") as log:
        proc = _start(url, port, log)
        try:
            for _ in range(300):
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert proc.poll() is None, (tmp_path / "s.log").read_text()
                time.sleep(0.1)
            else:
                raise AssertionError("the SQLite server never answered")
        finally:
            proc.terminate()
            proc.wait(15)
    engine = make_engine(url)
    assert schema_status(engine).current == HEAD
    engine.dispose()
