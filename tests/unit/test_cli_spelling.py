"""Options are spelt one way: choices with hyphens (``--scope remote-ip``, the API's
``remote_ip`` a deprecated alias that warns), booleans as flag pairs (``--synproxy/--no-synproxy``),
and ``connguard completion SHELL`` prints a script that really completes them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from connguard.cli.resources.rule import rule_fields


@click.command()
@rule_fields
def _fields(**fields):
    """Echo the fields given."""
    click.echo(repr(sorted((k, v) for k, v in fields.items() if v is not None)))


def _run(*args):
    return CliRunner().invoke(_fields, list(args), catch_exceptions=False)


def test_choices_are_hyphenated_and_map_to_the_api_value():
    out = _run("--scope", "remote-ip", "--direction", "ingress")
    assert out.exit_code == 0 and out.stdout == "[('direction', 'ingress'), ('scope', 'remote_ip')]\n", out.output
    assert out.stderr == ""


def test_underscore_spelling_is_a_deprecated_alias():
    out = _run("--scope", "remote_ip")
    assert out.exit_code == 0 and out.stdout == "[('scope', 'remote_ip')]\n", out.output
    assert out.stderr == "warning: --scope remote_ip is deprecated; write --scope remote-ip\n", out.stderr
    bad = _run("--scope", "remote")
    assert bad.exit_code == 2 and "'remote' is not one of 'port', 'remote-ip'" in bad.output, bad.output


def test_the_deprecated_spelling_is_not_advertised():
    help_text = _run("--help").output
    assert "[port|remote-ip]" in help_text and "remote_ip" not in help_text, help_text


def test_booleans_are_flag_pairs():
    assert _run("--synproxy").stdout == "[('synproxy', True)]\n"
    assert _run("--no-synproxy").stdout == "[('synproxy', False)]\n"
    assert _run().stdout == "[]\n", "an unset flag must not be sent (set changes only what it is given)"
    assert _run("--synproxy", "true").exit_code == 2, "the flag takes no value"


def _connguard() -> list[str]:
    return [sys.executable, "-c", "from connguard.cli.main import main; main()"]


@pytest.mark.parametrize("shell,marker", [("bash", "complete -o nosort -F _connguard_completion connguard"),
                                          ("zsh", "#compdef connguard"),
                                          ("fish", "complete --no-files --command connguard")])
def test_completion_script_per_shell(shell, marker):
    out = subprocess.run([*_connguard(), "completion", shell], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert marker in out.stdout and "_CONNGUARD_COMPLETE" in out.stdout, out.stdout[:400]


def _bash_complete(words: list[str]) -> list[str]:
    """Load the script into a real bash, as ~/.bashrc would, and press <TAB> after ``words``."""
    script = subprocess.run([*_connguard(), "completion", "bash"], capture_output=True, text=True,
                            check=True, timeout=60).stdout
    # The script runs `connguard` (its $1): a shim that is this tree's CLI.
    shim_dir = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"cg-complete-{os.getpid()}")
    os.makedirs(shim_dir, exist_ok=True)
    shim = os.path.join(shim_dir, "connguard")
    with open(shim, "w") as f:
        f.write(f"#!/bin/sh\nexec {sys.executable} -c 'from connguard.cli.main import main; main()' \"$@\"\n")
    os.chmod(shim, 0o755)
    words_sh = " ".join(f"'{w}'" for w in words)
    program = f'{script}\nCOMP_WORDS=({words_sh}); COMP_CWORD={len(words) - 1}\n' \
              '_connguard_completion connguard\nprintf "%s\\n" "${COMPREPLY[@]}"\n'
    try:
        out = subprocess.run(["bash", "--norc", "-c", program], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "PATH": f"{shim_dir}:{os.environ['PATH']}"})
    finally:
        shutil.rmtree(shim_dir, ignore_errors=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_bash_completion_completes_commands_and_choices():
    assert _bash_complete(["connguard", "ru"]) == ["rule", "rule-type"]
    assert _bash_complete(["connguard", "rule", "create", "web", "--scope", ""]) == ["port", "remote-ip"]
    assert "--sort-column" in _bash_complete(["connguard", "policy", "list", "--so"])
