"""The lab CLI as an operator uses it: SIGTERM cleans up like Ctrl-C, ``lab down`` of a lab
that does not exist fails, ``lab down --all`` asks and removes only this user's labs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from connguard.cli.main import cli
from connguard.lab import Lab
from connguard.lab import netns as nsx
from connguard.lab.topology import new_prefix

pytestmark = [pytest.mark.netns, pytest.mark.timeout(180)]

CLI = [sys.executable, "-c", "from connguard.cli.main import main; main()"]


def ours(prefix: str) -> list[str]:
    return [n for n in nsx.list_netns() if n.startswith(prefix + "-")]


@pytest.fixture(autouse=True)
def _root():
    if os.geteuid() != 0:
        pytest.skip("needs root")


def test_sigterm_during_lab_up_removes_what_was_built():
    prefix = new_prefix()
    proc = subprocess.Popen([*CLI, "lab", "up", "--prefix", prefix, "--vms", "60", "--clients", "2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while len(ours(prefix)) < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        built = len(ours(prefix))
        assert proc.poll() is None and built >= 3, f"lab up ended (rc {proc.returncode}) before it could be stopped"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 128 + signal.SIGTERM, (proc.returncode, err)
        assert "terminated (SIGTERM): cleaning up" in err, err
        left = ours(prefix)
        assert left == [], f"{len(left)} of the lab's namespaces left after SIGTERM ({built} built when sent)"
        assert not os.path.exists(Lab._path(prefix))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        Lab(prefix, [], []).down()


def test_down_of_a_lab_that_does_not_exist_fails():
    prefix = new_prefix()
    res = CliRunner().invoke(cli, ["lab", "down", prefix])
    assert res.exit_code == 1, (res.exit_code, res.output)
    assert res.output.strip() == (f"Error: no lab {prefix}: no namespace, process or lab file of it "
                                  "(see 'connguard lab list')"), res.output
    res = CliRunner().invoke(cli, ["lab", "down", prefix, "--yes"])
    assert res.exit_code == 2 and "--yes goes with --all" in res.output, res.output


def test_down_all_asks_and_spares_other_users_labs(tmp_path, monkeypatch):
    # A private lab directory: the labs of whoever else uses this machine are not in it and,
    # having no lab file there, must be left alone ("stray" namespaces from its point of view).
    from connguard.lab import spawn, topology

    monkeypatch.setattr(spawn, "STATE_DIR", str(tmp_path))
    monkeypatch.setattr(topology, "STATE_DIR", str(tmp_path))
    lab = Lab.up(vms=1, clients=1, sources=0)
    stray = f"{new_prefix()}-stray"  # a cglab namespace with no lab file (made by hand, or by another tool)
    subprocess.run(["ip", "netns", "add", stray], check=True)
    try:
        foreign = new_prefix()
        (tmp_path / f"{foreign}.json").write_text("{}")
        os.chown(tmp_path / f"{foreign}.json", 65534, 65534)
        runner = CliRunner()
        res = runner.invoke(cli, ["lab", "down", "--all"], input="n\n")
        assert res.exit_code == 1, (res.exit_code, res.output)
        assert f"remove 1 lab(s): {lab.prefix}? [y/N]" in res.output, res.output
        assert f"not removing 1 lab(s) of other users: {foreign}" in res.output, res.output
        assert sorted(ours(lab.prefix)) == sorted(lab.namespaces()), "answering no removed something"

        res = runner.invoke(cli, ["lab", "down", "--all", "--yes"])
        assert res.exit_code == 0, res.output
        assert f"removed {len(lab.namespaces())} namespaces" in res.output, res.output
        assert ours(lab.prefix) == []
        assert (tmp_path / f"{foreign}.json").exists(), "another user's lab file was removed"
        assert stray in nsx.list_netns(), "a namespace with no lab file was removed"
        assert "cglab namespace(s) with no lab file ('connguard lab down PREFIX' removes them)" in res.output
        assert stray in res.output.split("with no lab file", 1)[1].splitlines()[0], res.output
        res = runner.invoke(cli, ["lab", "down", "--all"])
        assert res.exit_code == 0 and "no labs of yours to remove" in res.output, res.output
    finally:
        lab.down()
        subprocess.run(["ip", "netns", "delete", stray], check=False)


def test_the_sigterm_handler_is_the_commands_only():
    # tests (and other embedders) run lab commands in their own process: the handler goes
    # with the command
    before = signal.getsignal(signal.SIGTERM)
    res = CliRunner().invoke(cli, ["lab", "list"])
    assert res.exit_code == 0, res.output
    assert signal.getsignal(signal.SIGTERM) is before
