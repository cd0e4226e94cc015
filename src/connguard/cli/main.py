"""Entry point of the ``connguard`` command.

Each subcommand lives in its own module and is registered here explicitly.
"""

from __future__ import annotations

import click

from connguard import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="connguard")
def cli() -> None:
    """Connection-abuse protection for cloud VMs (nftables + conntrack)."""


def _register() -> None:
    from connguard.cli import agent, apply, lab, status

    cli.add_command(apply.apply_cmd)
    cli.add_command(agent.agent_cmd)
    cli.add_command(status.status_cmd)
    cli.add_command(lab.lab)
    from connguard.cli import demo

    lab.lab.add_command(demo.demo)

    # Control plane: server, tokens and the resource commands.
    from connguard.cli import server, token, up
    from connguard.cli.resources import COMMANDS

    cli.add_command(server.server_cmd)
    cli.add_command(up.up_cmd)
    cli.add_command(token.token)
    for command in COMMANDS:
        cli.add_command(command)


_register()


def main() -> None:
    cli()
