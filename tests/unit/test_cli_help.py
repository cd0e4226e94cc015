"""Every command, subcommand, option and argument of ``connguard`` is documented, found by
walking the whole click tree (the same walk ``connguard help --all`` prints), and every
listing takes the listing options (connguard.cli.output.lister)."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from connguard.cli.help import walk
from connguard.cli.main import cli

TREE = list(walk(cli, ("connguard",)))
LISTING_OPTIONS = {"--limit", "--marker", "--long", "--sort-column", "--sort-ascending", "--format", "--column",
                   "--max-width", "--fit-width"}


def _name(path: tuple[str, ...]) -> str:
    return " ".join(path)


def test_the_walk_reaches_every_resource_subcommand():
    names = {_name(p) for p, _ in TREE}
    expected = {"connguard rule show", "connguard policy list", "connguard port unset", "connguard ban delete",
                "connguard lab up", "connguard agent list", "connguard token create", "connguard help",
                "connguard completion"}
    assert expected <= names, sorted(expected - names)
    assert len(TREE) > 40, f"only {len(TREE)} commands walked"


@pytest.mark.parametrize("path,command", TREE, ids=[_name(p) for p, _ in TREE])
def test_every_command_option_and_argument_has_help(path, command):
    text = " ".join((command.help or command.short_help or "").split())
    assert text, f"{_name(path)} has no help text"
    missing = [p.opts[-1] for p in command.params
               if isinstance(p, click.Option) and not p.hidden and not (p.help or "").strip()]
    assert not missing, f"{_name(path)}: options without help: {missing}"
    # click arguments have no help of their own: the command's text must name each one.
    unnamed = [p.human_readable_name for p in command.params
               if isinstance(p, click.Argument) and p.human_readable_name not in (command.help or "")]
    assert not unnamed, f"{_name(path)}: help text {text!r} does not explain {unnamed}"


LISTS = [(p, c) for p, c in TREE if p[-1] == "list" and p[1] not in ("lab",)]


@pytest.mark.parametrize("path,command", LISTS, ids=[_name(p) for p, _ in LISTS])
def test_every_listing_takes_the_listing_options(path, command):
    opts = {o for p in command.params if isinstance(p, click.Option) for o in p.opts}
    assert LISTING_OPTIONS <= opts, f"{_name(path)} lacks {sorted(LISTING_OPTIONS - opts)}"


def test_help_all_prints_every_page():
    out = CliRunner().invoke(cli, ["help", "--all"])
    assert out.exit_code == 0, out.output
    titles = [line for line in out.output.splitlines() if line.startswith("connguard") and "Usage" not in line]
    assert titles == [_name(p) for p, _ in TREE], f"{len(titles)} pages for {len(TREE)} commands"
    assert "Usage: connguard rule create [OPTIONS] POLICY" in out.output


def test_help_of_one_command_is_its_help_page():
    one = CliRunner().invoke(cli, ["help", "rule", "show"], prog_name="connguard")
    own = CliRunner().invoke(cli, ["rule", "show", "--help"], prog_name="connguard")
    assert one.exit_code == own.exit_code == 0
    assert one.output.strip() == own.output.strip()
    bad = CliRunner().invoke(cli, ["help", "rule", "nope"])
    assert bad.exit_code == 2 and "no command 'connguard rule nope'" in bad.output, bad.output
