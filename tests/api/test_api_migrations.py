"""Migrations: empty to head on both backends, models equal migrations, newer schema refused."""

from __future__ import annotations


import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from apitest import pg_url

from connguard.db.scratch import temporary_database
from sqlalchemy import inspect, text

from connguard.db.models import Base
from connguard.db.session import SchemaTooNew, alembic_config, current_revision, make_engine, migrate


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}"
        return
    url = pg_url()
    if not url:
        pytest.skip("CONNGUARD_TEST_PG_URL not set")
    with temporary_database(url, "connguard_mig") as scratch:
        yield scratch


def test_upgrade_from_empty_matches_models(empty_db):
    engine = make_engine(empty_db)
    try:
        assert current_revision(engine) is None
        migrate(engine)
        head = ScriptDirectory.from_config(alembic_config(engine)).get_current_head()
        assert current_revision(engine) == head
        assert set(Base.metadata.tables) <= set(inspect(engine).get_table_names())
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == []
        migrate(engine)  # idempotent
    finally:
        engine.dispose()


def test_newer_schema_is_refused(empty_db):
    engine = make_engine(empty_db)
    try:
        migrate(engine)
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = 'f00dfeed'"))
        with pytest.raises(SchemaTooNew, match="newer than this connguard"):
            migrate(engine)
    finally:
        engine.dispose()


def test_server_refuses_a_newer_schema(tmp_path):
    import subprocess

    from apitest import CLI

    url = f"sqlite:///{tmp_path / 'new.db'}"
    engine = make_engine(url)
    migrate(engine)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'f00dfeed'"))
    engine.dispose()
    r = subprocess.run([*CLI, "server", "--db", url, "--bind", "127.0.0.1:1"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1 and "newer than this connguard" in r.stderr and "Traceback" not in r.stderr


def test_public_names():
    import connguard.server

    assert connguard.server.__all__ == ["create_app"]


def test_default_database_is_under_the_data_directory(monkeypatch, tmp_path):
    from connguard.db.session import default_db_url

    monkeypatch.setenv("CONNGUARD_DATA_DIR", str(tmp_path / "data"))
    assert default_db_url() == f"sqlite:///{tmp_path / 'data' / 'connguard.db'}"
    monkeypatch.delenv("CONNGUARD_DATA_DIR")
    assert default_db_url() == "sqlite:////var/lib/connguard/connguard.db"


def test_listing_indexes_downgrade_and_upgrade_again(empty_db):
    from alembic import command

    engine = make_engine(empty_db)
    try:
        migrate(engine, revision="0002")
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO qos_policies (id, project_id, name, description, shared, is_default, "
                              "enforcement, tags, revision_number, created_at, updated_at) VALUES ('p', 'a', 'n', "
                              "'', false, false, 'enforce', '[]', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
        migrate(engine)
        names = {ix["name"] for ix in inspect(engine).get_indexes("ports")}
        assert {"ix_ports_project_id_created_at", "ix_ports_created_at"} <= names
        command.downgrade(alembic_config(engine), "0002")
        assert "ix_ports_project_id" in {ix["name"] for ix in inspect(engine).get_indexes("ports")}
        migrate(engine)
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
            assert conn.execute(text("SELECT name FROM qos_policies")).scalar() == "n"
    finally:
        engine.dispose()


def test_agent_reports_migration_keeps_existing_rows_and_downgrades(empty_db):
    """0004 adds non-null columns to tables that may hold rows (their server defaults fill
    them), and its downgrade leaves the 0003 schema."""
    from alembic import command

    engine = make_engine(empty_db)
    try:
        migrate(engine, revision="0003")
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO ports (id, project_id, name, fixed_ips, device_owner, status, "
                              "interface_name, revision_number, created_at, updated_at) VALUES ('p', 'a', '', '[]', "
                              "'', 'ACTIVE', 'tap0', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
            conn.execute(text("INSERT INTO agents (id, agent_type, host, admin_state_up, configurations, started_at, "
                              "heartbeat_timestamp) VALUES ('g', 't', 'h', true, '{}', CURRENT_TIMESTAMP, "
                              "CURRENT_TIMESTAMP)"))
        migrate(engine)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT status_message FROM ports")).scalar() == ""
            assert conn.execute(text("SELECT apply_errors_total, version FROM agents")).one() == (0, "")
        command.downgrade(alembic_config(engine), "0003")
        assert not {"port_counters", "port_observations"} & set(inspect(engine).get_table_names())
        assert "status_message" not in {c["name"] for c in inspect(engine).get_columns("ports")}
        migrate(engine)
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    finally:
        engine.dispose()


def test_udp_brute_force_rules_are_dropped_and_the_rest_kept(empty_db):
    """0005: brute-force rules over udp or sctp, which the model now refuses (a UDP source is a
    claim anyone can make), are deleted; their policy's and every host's revision move on so
    agents fetch a state without them; every other rule is kept and still validates."""
    import json

    from connguard.model.rules import RULE_TYPES

    engine = make_engine(empty_db)
    rules = {
        "sip-udp": ("brute_force", {"profile": "sip", "protocol": "udp", "max_attempts": 20}),
        "custom-udp": ("brute_force", {"profile": "custom", "protocol": "udp", "port_range_min": 5060}),
        "custom-sctp": ("brute_force", {"profile": "custom", "protocol": "sctp", "port_range_min": 22}),
        "sip": ("brute_force", {"profile": "sip", "max_attempts": 20}),
        "ssh-tcp": ("brute_force", {"profile": "ssh", "protocol": "tcp"}),
        "rate-udp": ("connection_rate_limit", {"protocol": "udp", "max_cps": 5}),
    }
    try:
        migrate(engine, revision="0004")
        with engine.begin() as conn:
            for pid in ("p", "q"):
                conn.execute(text("INSERT INTO qos_policies (id, project_id, name, description, shared, is_default, "
                                  "enforcement, tags, revision_number, created_at, updated_at) VALUES (:id, 'a', :id, "
                                  "'', false, false, 'enforce', '[]', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"),
                             {"id": pid})
            for rid, (rtype, params) in rules.items():
                conn.execute(text("INSERT INTO qos_rules (id, policy_id, type, rule_key, params, revision_number, "
                                  "created_at, updated_at) VALUES (:id, :pid, :type, :id, :params, 1, "
                                  "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"),
                             {"id": rid, "pid": "q" if rid == "ssh-tcp" else "p", "type": rtype,
                              "params": json.dumps(params)})
            conn.execute(text("INSERT INTO host_revisions (host, revision) VALUES ('h1', 7)"))
        migrate(engine)
        with engine.connect() as conn:
            kept = dict(conn.execute(text("SELECT id, params FROM qos_rules")).all())
            revisions = dict(conn.execute(text("SELECT id, revision_number FROM qos_policies")).all())
            host = conn.execute(text("SELECT revision FROM host_revisions WHERE host = 'h1'")).scalar()
        assert sorted(kept) == ["rate-udp", "sip", "ssh-tcp"], sorted(kept)
        for rid, params in kept.items():  # what is left is what the model (and host_state) accept
            RULE_TYPES[rules[rid][0]].model_validate(json.loads(params) if isinstance(params, str) else params)
        assert revisions == {"p": 2, "q": 1} and host == 8, (revisions, host)
    finally:
        engine.dispose()


def test_audit_migration_keeps_tokens_and_events_and_downgrades(empty_db):
    """0006 adds nullable columns only: existing tokens keep working (never expiring, never
    used) and existing events have no actor; its downgrade leaves the 0005 schema."""
    from alembic import command

    engine = make_engine(empty_db)
    try:
        migrate(engine, revision="0005")
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO tokens (id, token_hash, project_id, role, description, created_at) "
                              "VALUES ('t', 'h', 'a', 'member', '', CURRENT_TIMESTAMP)"))
            conn.execute(text("INSERT INTO events (id, event_type, count, message, created_at) "
                              "VALUES ('e', 'ban', 1, 'old', CURRENT_TIMESTAMP)"))
        migrate(engine)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT expires_at, last_used_at FROM tokens")).one() == (None, None)
            assert conn.execute(text("SELECT actor_token_id, actor_role, message FROM events")).one() == (
                None, None, "old")
        command.downgrade(alembic_config(engine), "0005")
        assert "actor_token_id" not in {c["name"] for c in inspect(engine).get_columns("events")}
        assert "expires_at" not in {c["name"] for c in inspect(engine).get_columns("tokens")}
        migrate(engine)
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
            assert conn.execute(text("SELECT message FROM events")).scalar() == "old"
    finally:
        engine.dispose()
