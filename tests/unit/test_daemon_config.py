"""The daemons' config (cli/daemon_config.py; issue 11, item 3): precedence flag > environment >
file > default, every error naming its key, unknown keys refused, secrets only from files of
mode 0600/0400, SQLite URLs that cannot silently create a database somewhere unexpected. The
last tests run the real ``connguard`` command and check its exact message and exit status."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from connguard.cli.daemon_config import ConfigError, check_db_url, read_secret, resolve

CLI = [sys.executable, "-c", "from connguard.cli.main import main; main()"]


def write(tmp_path, text: str):
    path = tmp_path / "connguard.toml"
    path.write_text(text)
    return path


def test_precedence_is_flag_then_environment_then_file_then_default(tmp_path):
    path = write(tmp_path, "[agent]\ninterval = 3\ndrift_interval = 30\n")
    env = {"CONNGUARD_AGENT_INTERVAL": "2", "CONNGUARD_AGENT_DRIFT_INTERVAL": "20"}
    values, origin, _ = resolve("agent", {"interval": 1.0}, config=str(path), environ=env)
    assert (values["interval"], origin["interval"]) == (1.0, "flag")
    assert (values["drift_interval"], origin["drift_interval"]) == (20.0, "env CONNGUARD_AGENT_DRIFT_INTERVAL")
    values, origin, _ = resolve("agent", {}, config=str(path), environ={})
    assert (values["interval"], origin["interval"]) == (3.0, "file")
    assert (values["report_interval"], origin["report_interval"]) == (5.0, "default")


def test_config_file_comes_from_the_flag_then_connguard_config(tmp_path):
    a = write(tmp_path, "[agent]\ninterval = 3\n")
    b = tmp_path / "b.toml"
    b.write_text("[agent]\ninterval = 4\n")
    assert resolve("agent", {}, config=None, environ={"CONNGUARD_CONFIG": str(b)})[0]["interval"] == 4.0
    assert resolve("agent", {}, config=str(a), environ={"CONNGUARD_CONFIG": str(b)})[0]["interval"] == 3.0


def test_errors_name_the_key_and_where_the_value_came_from(tmp_path):
    path = write(tmp_path, '[agent]\ninterval = "fast"\n')
    with pytest.raises(ConfigError) as exc:
        resolve("agent", {}, config=str(path), environ={})
    assert exc.value.problems == [f"{path}: agent.interval: must be a number between 0.1 and 60, got 'fast'"]
    with pytest.raises(ConfigError) as exc:
        resolve("agent", {}, config=None, environ={"CONNGUARD_AGENT_INTERVAL": "fast",
                                                   "CONNGUARD_CONFIG": str(tmp_path / "none.toml")})
    assert exc.value.problems == [f"{tmp_path / 'none.toml'}: no such config file"]
    with pytest.raises(ConfigError) as exc:
        resolve("agent", {"interval": 0}, config=str(write(tmp_path, "")), environ={"CONNGUARD_AGENT_DRIFT_INTERVAL": "x"})
    assert exc.value.problems == ["--interval: must be a number between 0.1 and 60, got 0",
                                  "CONNGUARD_AGENT_DRIFT_INTERVAL (agent.drift_interval): must be a number between 1 "
                                  "and 3600, got 'x'"]


def test_unknown_keys_and_sections_are_refused(tmp_path):
    path = write(tmp_path, 'loglevel = "debug"\nurl = "http://x"\n[agent]\nintervall = 2\n[server]\nbind = "x"\n')
    with pytest.raises(ConfigError) as exc:
        resolve("server", {}, config=str(path), environ={})
    assert f"{path}: agent.intervall: unknown key (known: state_file, server, token_file, host, interfaces, " \
           "report_interval, workdir, netns, interval, drift_interval, metrics_listen, start_timeout, log_level, log_format)" \
           in exc.value.problems, exc.value.problems
    assert f"{path}: loglevel: unknown section or key (known: [server], [agent]; top-level url and token belong " \
           "to the CLI client)" in exc.value.problems, exc.value.problems
    assert len(exc.value.problems) == 2, exc.value.problems  # 'url' is the client's: accepted


def test_the_shipped_example_config_is_valid(tmp_path):
    from connguard.cli.service import EXAMPLE_CONFIG

    path = write(tmp_path, EXAMPLE_CONFIG)
    for section in ("server", "agent"):
        _, origin, _ = resolve(section, {}, config=str(path), environ={})
        assert set(origin.values()) == {"default"}, origin


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o620])
def test_a_secret_file_others_can_read_is_refused(tmp_path, mode):
    path = tmp_path / "token"
    path.write_text("cg_secret\n")
    path.chmod(mode)
    with pytest.raises(ConfigError) as exc:
        read_secret(path, "agent.token_file")
    assert str(exc.value) == (f"agent.token_file: {path} is readable or writable by group or others "
                              f"(mode {mode:04o}); a secret's file must be mode 0600 or 0400: chmod 600 {path}")


@pytest.mark.parametrize("mode", [0o600, 0o400])
def test_a_secret_file_of_mode_0600_or_0400_is_read(tmp_path, mode):
    path = tmp_path / "token"
    path.write_text("cg_secret\n")
    path.chmod(mode)
    assert read_secret(path, "agent.token_file") == "cg_secret"


def test_an_empty_or_symlinked_secret_file_is_refused(tmp_path):
    path = tmp_path / "token"
    path.write_text("\n")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match=f"agent.token_file: {path} is empty"):
        read_secret(path, "agent.token_file")
    link = tmp_path / "link"
    link.symlink_to(path)
    with pytest.raises(ConfigError, match="agent.token_file: cannot read .*link: Too many levels of symbolic links"):
        read_secret(link, "agent.token_file")


@pytest.mark.parametrize("url, message", [
    ("sqlite:///connguard.db", "an SQLite path must be absolute: sqlite:////ABSOLUTE/PATH (four slashes), got "
                               "'sqlite:///connguard.db' (relative to the working directory)"),
    ("sqlite://", "an SQLite URL needs a file: sqlite:////ABSOLUTE/PATH (four slashes), got 'sqlite://'"),
    ("sqlite:///:memory:", "an SQLite URL needs a file: sqlite:////ABSOLUTE/PATH (four slashes), got "
                           "'sqlite:///:memory:'"),
    ("sqlite:////nonexistent-dir/connguard.db", "the directory /nonexistent-dir does not exist (it is not created: "
                                                "check the path), got 'sqlite:////nonexistent-dir/connguard.db'"),
    ("sqlite:/var/lib/connguard.db", "must be a database URL (sqlite:////ABSOLUTE/PATH or postgresql+psycopg://...), "
                                     "got 'sqlite:/var/lib/connguard.db'"),
    ("sqllite:////tmp/x.db", "unsupported database 'sqllite': use sqlite:////ABSOLUTE/PATH or "
                             "postgresql+psycopg://..., got 'sqllite:////tmp/x.db'"),
])
def test_unusable_sqlite_urls_are_refused(url, message):
    with pytest.raises(ValueError) as exc:
        check_db_url(url)
    assert str(exc.value) == message


def test_good_database_urls_pass(tmp_path):
    assert check_db_url(f"sqlite:///{tmp_path}/c.db") == f"sqlite:///{tmp_path}/c.db"
    assert check_db_url("postgresql+psycopg://u@/db?host=/run/postgresql").startswith("postgresql+psycopg://")


# ---- the real command ----------------------------------------------------------------------------

def run(*args: str, env: dict | None = None, cwd=None) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("CONNGUARD_")}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60, env={**full, **(env or {})},
                          cwd=cwd)


def test_agent_config_error_exits_2_with_the_key_named(tmp_path):
    path = write(tmp_path, '[agent]\nstate_file = "/etc/x.yaml"\ninterval = "fast"\n')
    r = run("agent", "--config", str(path))
    assert r.returncode == 2, r
    assert r.stderr == (f"connguard agent: configuration error:\n"
                        f"  {path}: agent.interval: must be a number between 0.1 and 60, got 'fast'\n"), r.stderr


def test_agent_refuses_a_token_file_others_can_read(tmp_path):
    token = tmp_path / "token"
    token.write_text("cg_x\n")
    token.chmod(0o644)
    r = run("agent", "--server", "http://127.0.0.1:9", "--token-file", str(token))
    assert r.returncode == 2, r
    assert (f"agent.token_file: {token} is readable or writable by group or others (mode 0644); a secret's file "
            f"must be mode 0600 or 0400: chmod 600 {token}") in r.stderr, r.stderr


def test_server_refuses_a_relative_sqlite_url_and_creates_nothing(tmp_path):
    r = run("server", "--db", "sqlite:///connguard.db", cwd=tmp_path)
    assert r.returncode == 2, r
    assert "--db: an SQLite path must be absolute: sqlite:////ABSOLUTE/PATH (four slashes)" in r.stderr, r.stderr
    r = run("server", env={"CONNGUARD_SERVER_DB": f"sqlite:///{tmp_path}/missing/c.db"})
    assert r.returncode == 2, r
    assert (f"CONNGUARD_SERVER_DB (server.db): the directory {tmp_path}/missing does not exist (it is not created: "
            "check the path)") in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == [], list(tmp_path.iterdir())


def test_server_refuses_a_database_password_file_others_can_read(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("s3cret\n")
    pw.chmod(0o640)
    r = run("server", "--db", "postgresql+psycopg://u@/x", "--database-password-file", str(pw))
    assert r.returncode == 2, r
    assert f"server.database_password_file: {pw} is readable or writable by group or others (mode 0640)" in r.stderr
    assert "s3cret" not in r.stderr + r.stdout


def test_token_create_output_writes_a_0600_file_the_agent_accepts(tmp_path):
    db = f"sqlite:///{tmp_path}/cg.db"
    out = tmp_path / "agent.token"
    r = run("token", "create", "--db", db, "--project", "admin", "--role", "agent", "--host", "h1",
            "--output", str(out))
    assert r.returncode == 0 and r.stdout == "", r
    assert r.stderr == f"token written to {out} (mode 0600)\n", r.stderr
    assert oct(out.stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "cg.db").stat().st_mode & 0o777) == "0o600"
    assert read_secret(out, "agent.token_file").startswith("cg_")
    again = run("token", "create", "--db", db, "--project", "admin", "--role", "agent", "--output", str(out))
    assert again.returncode == 2 and f"{out} exists: not overwritten" in again.stderr, again
    rel = run("token", "create", "--db", "sqlite:///x.db", "--project", "admin", "--role", "admin", cwd=tmp_path)
    assert rel.returncode == 2 and "an SQLite path must be absolute" in rel.stderr, rel
    assert not (tmp_path / "x.db").exists()


def test_a_mode_given_on_the_command_line_wins_over_the_other_mode_in_the_file(tmp_path):
    path = write(tmp_path, '[agent]\nserver = "http://127.0.0.1:9"\n')
    bad = tmp_path / "bad.yaml"
    bad.write_text("policies: [\n")
    # a namespace that does not exist: nothing can reach any kernel ruleset from this test
    r = run("agent", "--config", str(path), "--state-file", str(bad), "--workdir", str(tmp_path / "w"),
            "--netns", "cg-no-such-ns")
    # standalone mode was taken (not "give either ... or ..."): the standalone agent's setup fails
    assert r.returncode == 1, r
    assert "network namespace 'cg-no-such-ns' does not exist" in r.stderr and "give either" not in r.stderr, r.stderr
