"""systemd units and daemon logging (issue 11, item 2): the shipped units, installed by
``connguard service install``, pass ``systemd-analyze verify`` with no warning (it catches
unknown keys, bad values and an ExecStart that is not executable); the daemons' log lines drop
their timestamp and carry journald's priority prefix when stderr is the journal stream
(JOURNAL_STREAM), keep it otherwise, and are one JSON object a line with --log-format json."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest

CLI = [sys.executable, "-c", "from connguard.cli.main import main; main()"]


def test_service_install_writes_units_that_systemd_analyze_verifies(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (scripts/setup.sh installs systemd)")
    binary = tmp_path / "bin" / "connguard"
    binary.parent.mkdir()
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    r = subprocess.run([*CLI, "service", "install", "--root", str(tmp_path), "--bin", str(binary)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r
    units = tmp_path / "etc/systemd/system"
    assert r.stdout.splitlines()[:3] == [f"{units}/connguard-server.service: written",
                                         f"{units}/connguard-agent.service: written",
                                         f"{tmp_path}/etc/connguard/connguard.toml: written (an example: every key "
                                         "commented out)"], r.stdout
    assert "  systemctl enable --now connguard-server connguard-agent" in r.stdout, r.stdout
    for role in ("server", "agent"):
        text = (units / f"connguard-{role}.service").read_text()
        assert f"ExecStart={binary} {role} --config /etc/connguard/connguard.toml" in text
        for line in ("Type=notify", "ExecReload=/bin/kill -HUP $MAINPID", "Restart=on-failure",
                     "ProtectSystem=strict", "StateDirectory=connguard", "UMask=0077"):
            assert line in text.splitlines(), (role, line)
    agent = (units / "connguard-agent.service").read_text().splitlines()
    assert "CapabilityBoundingSet=CAP_NET_ADMIN CAP_SYS_ADMIN" in agent
    assert "CapabilityBoundingSet=" in (units / "connguard-server.service").read_text().splitlines()
    v = subprocess.run([analyze, "verify", *sorted(str(p) for p in units.iterdir())], capture_output=True,
                       text=True, timeout=120)
    assert v.returncode == 0 and v.stderr == "" and v.stdout == "", (v.returncode, v.stderr, v.stdout)
    # a second install changes nothing and keeps the operator's config
    (tmp_path / "etc/connguard/connguard.toml").write_text("[agent]\n")
    again = subprocess.run([*CLI, "service", "install", "--root", str(tmp_path), "--bin", str(binary),
                            "--role", "agent"], capture_output=True, text=True, timeout=60)
    assert again.stdout.splitlines()[:2] == [f"{units}/connguard-agent.service: unchanged",
                                             f"{tmp_path}/etc/connguard/connguard.toml: kept (exists)"], again.stdout
    assert (tmp_path / "etc/connguard/connguard.toml").read_text() == "[agent]\n"


def test_systemd_analyze_catches_a_broken_unit(tmp_path):
    """The check above can fail: a misspelt key is reported."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed")
    from connguard.cli.service import unit_text

    unit = tmp_path / "connguard-agent.service"
    unit.write_text(unit_text("agent", "/bin/true").replace("ProtectSystem=strict", "ProtectSytem=strict"))
    v = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=120)
    assert "Unknown key 'ProtectSytem'" in v.stderr, v.stderr


LOG = "from connguard.cli import logsetup; import logging; logsetup.setup('info', {fmt!r}); " \
      "logging.getLogger('connguard.agent').warning('hello %s', 'there')"


def _log_line(tmp_path, fmt: str, journal: bool) -> str:
    out = tmp_path / "stderr"
    with open(out, "w") as fh:
        st = os.fstat(fh.fileno())
        env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
        if journal:
            env["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
        subprocess.run([sys.executable, "-c", LOG.format(fmt=fmt)], stderr=fh, env=env, check=True, timeout=30)
    return out.read_text()


def test_under_journald_log_lines_have_no_timestamp_and_a_priority(tmp_path):
    assert _log_line(tmp_path, "text", journal=True) == "<4>WARNING connguard.agent hello there\n"


def test_elsewhere_log_lines_keep_their_timestamp(tmp_path):
    line = _log_line(tmp_path, "text", journal=False)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING connguard.agent hello there\n", line), line


def test_a_journal_stream_that_is_not_stderr_is_not_believed(tmp_path):
    out = tmp_path / "stderr"
    with open(out, "w") as fh:
        env = {**os.environ, "JOURNAL_STREAM": "1:1"}
        subprocess.run([sys.executable, "-c", LOG.format(fmt="text")], stderr=fh, env=env, check=True, timeout=30)
    assert not out.read_text().startswith("<"), out.read_text()


def test_json_logs_are_one_object_a_line(tmp_path):
    body = json.loads(_log_line(tmp_path, "json", journal=True))
    assert body["level"] == "warning" and body["logger"] == "connguard.agent" and body["message"] == "hello there"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", body["time"]), body


def test_install_warns_when_protecthome_would_hide_the_command(tmp_path):
    from connguard.cli.service import hidden_paths

    script = tmp_path / "connguard"
    script.write_text("#!/root/venv/bin/python3\n")
    assert hidden_paths(str(script)) == ["/root/venv/bin/python3"]
    script.write_text("#!/usr/bin/python3\n")
    assert hidden_paths(str(script)) == []  # tmp_path is under /tmp
