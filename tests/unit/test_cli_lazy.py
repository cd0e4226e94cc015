"""The ``connguard`` group loads commands lazily (connguard.cli.main): listing them imports none,
running one imports its own module only, and the table's short help is each command's own."""

import subprocess
import sys

import click
import pytest

from connguard.cli.main import COMMANDS, cli, load

HEAVY = ("connguard.compiler", "connguard.nft", "connguard.db", "httpx", "sqlalchemy", "fastapi", "pydantic",
         "prettytable")


def _imported_after(args: list[str]) -> set[str]:
    code = ("import sys\nfrom connguard.cli.main import cli\n"
            "try:\n    cli(%r)\nexcept SystemExit:\n    pass\n"
            "print('\\n'.join(sorted(sys.modules)))" % (args,))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


@pytest.mark.parametrize("args", [["--help"], ["status", "--help"], ["apply", "--help"], ["policy", "list", "--help"],
                                  ["ban", "delete", "--help"]])
def test_help_imports_nothing_heavy(args):
    mods = _imported_after(args)
    heavy = sorted(m for m in mods if m.split(".")[0] in HEAVY or m.startswith(HEAVY))
    assert not heavy, f"connguard {' '.join(args)} imported {heavy[:8]}"


def test_top_help_imports_no_command_module():
    mods = _imported_after(["--help"])
    loaded = sorted(t.split(":")[0] for t, _ in COMMANDS.values() if t.split(":")[0] in mods)
    assert loaded == [], f"connguard --help imported {loaded}"


@pytest.mark.parametrize("name", [n for n in COMMANDS if load(n) is not None])
def test_table_help_is_the_commands_own(name):
    command = load(name)
    assert command.name == name, f"{COMMANDS[name][0]} is named {command.name!r}, registered as {name!r}"
    own = " ".join((command.help or "").split("\n\n")[0].split())
    assert COMMANDS[name][1] == own, f"{name}: table says {COMMANDS[name][1]!r}, command says {own!r}"


def test_every_listed_command_resolves():
    ctx = click.Context(cli)
    names = cli.list_commands(ctx)
    assert {"apply", "agent", "status", "lab", "server", "token", "policy", "ban", "allow"} <= set(names), names
    assert all(cli.get_command(ctx, n) is not None for n in names)
    assert cli.get_command(ctx, "no-such-command") is None
