"""Entry point of the ``connguard`` command.

Each subcommand lives in its own module and is registered here explicitly. A command's module
is imported only when that command runs (or for ``--help``): ``connguard status`` must answer
in well under a second, and the control-plane commands import an HTTP client and more.
"""

from __future__ import annotations

import importlib

import click

from connguard import __version__

# name -> (module, attribute); the resource commands (control plane) come from COMMANDS
LOCAL = {
    "apply": ("connguard.cli.apply", "apply_cmd"),
    "agent": ("connguard.cli.agent", "agent_cmd"),
    "status": ("connguard.cli.status", "status_cmd"),
    "lab": ("connguard.cli.lab", "lab"),
    "server": ("connguard.cli.server", "server_cmd"),
    "token": ("connguard.cli.token", "token"),
    "up": ("connguard.cli.up", "up_cmd"),
}


def _resources() -> dict[str, click.Command]:
    from connguard.cli.resources import COMMANDS

    return {c.name: c for c in COMMANDS if c.name}


class _Group(click.Group):
    def list_commands(self, ctx):
        return sorted([*LOCAL, *_resources()])

    def get_command(self, ctx, name):
        if name not in LOCAL:
            return _resources().get(name)
        module, attr = LOCAL[name]
        command = getattr(importlib.import_module(module), attr)
        if name == "lab" and "demo" not in command.commands:
            from connguard.cli import demo

            command.add_command(demo.demo)
        return command


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="connguard")
def cli() -> None:
    """Connection-abuse protection for cloud VMs (nftables + conntrack)."""


def main() -> None:
    cli()
