"""The CLI config file ``connguard up`` writes: where it is, precedence, the token's binding to
its URL, errors naming the file."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from connguard.cli import config
from connguard.cli.main import cli

DEFAULT = "http://127.0.0.1:9696"


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    for var in ("CONNGUARD_URL", "CONNGUARD_TOKEN", "CONNGUARD_CONFIG", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path / ".config" / "connguard" / "config.toml"


def test_location_follows_home_xdg_and_explicit(cfg, tmp_path, monkeypatch):
    assert config.config_path() == cfg
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config.config_path() == tmp_path / "xdg" / "connguard" / "config.toml"
    monkeypatch.setenv("CONNGUARD_CONFIG", str(tmp_path / "c.toml"))
    assert config.config_path() == tmp_path / "c.toml"


def test_save_is_private_and_round_trips(cfg):
    path = config.save({"url": "http://127.0.0.1:1234", "token": 'cg_a"b\\c'})
    assert path == cfg and (cfg.stat().st_mode & 0o777) == 0o600, oct(cfg.stat().st_mode)
    assert (cfg.parent.stat().st_mode & 0o777) == 0o700
    assert config.load() == {"url": "http://127.0.0.1:1234", "token": 'cg_a"b\\c'}


def test_precedence_flags_then_environment_then_file_then_default(cfg):
    assert config.resolve(None, None, DEFAULT) == (DEFAULT, None)  # no file
    config.save({"url": "http://127.0.0.1:1234/", "token": "cg_file"})
    assert config.resolve(None, None, DEFAULT) == ("http://127.0.0.1:1234/", "cg_file")
    assert config.resolve(None, "cg_flag", DEFAULT) == ("http://127.0.0.1:1234/", "cg_flag")
    # The file's token is bound to the file's URL (a trailing slash is the same URL) ...
    assert config.resolve("http://127.0.0.1:1234", None, DEFAULT) == ("http://127.0.0.1:1234", "cg_file")
    # ... and never sent to another server.
    assert config.resolve("http://203.0.113.9:9696", None, DEFAULT) == ("http://203.0.113.9:9696", None)


def test_a_file_without_url_binds_its_token_to_the_default(cfg):
    cfg.parent.mkdir(parents=True)
    cfg.write_text('token = "cg_only"\n')
    assert config.resolve(None, None, DEFAULT) == (DEFAULT, "cg_only")
    assert config.resolve("http://127.0.0.1:1", None, DEFAULT) == ("http://127.0.0.1:1", None)


@pytest.mark.parametrize("body, says", [("url = [", "not valid TOML"), ("url = 5", "url: must be a non-empty string"),
                                        ('token = ""', "token: must be a non-empty string")])
def test_a_bad_file_is_an_error_naming_it_and_the_key(cfg, body, says):
    cfg.parent.mkdir(parents=True)
    cfg.write_text(body)
    with pytest.raises(config.ConfigError) as err:
        config.resolve(None, None, DEFAULT)
    assert str(cfg) in str(err.value) and says in str(err.value), str(err.value)
    result = CliRunner().invoke(cli, ["policy", "list"])
    assert result.exit_code == 1 and says in result.stderr, (result.exit_code, result.output)


def test_resource_commands_read_the_file(cfg):
    config.save({"url": "http://127.0.0.1:1", "token": "cg_file"})
    result = CliRunner().invoke(cli, ["policy", "list"])
    assert result.exit_code == 1 and "cannot reach the server at http://127.0.0.1:1/" in result.stderr, result.stderr
    env = CliRunner().invoke(cli, ["policy", "list"], env={"CONNGUARD_URL": "http://127.0.0.1:2"})
    assert "http://127.0.0.1:2/" in env.stderr, env.stderr
