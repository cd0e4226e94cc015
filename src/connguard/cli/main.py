"""Entry point of the ``connguard`` command.

Each subcommand lives in its own module and is registered here, in ``COMMANDS``, by the dotted
path of its click object: a command's module is imported only when that command runs (or its
own ``--help`` is asked for). ``connguard --help`` imports none of them (it prints the short
help kept in the table; tests/unit/test_cli_lazy.py checks it against each command's own), so a
command with no work to do starts in a fraction of a second instead of importing the compiler,
the database layer and an HTTP client first (docs/benchmarks.md, "CLI start-up").

To add a command: one line in ``COMMANDS``, ``name: ("module:attribute", "short help")``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

import click

from connguard import __version__

COMMANDS: dict[str, tuple[str, str]] = {
    # local (kernel-facing) commands and daemons
    "apply": ("connguard.cli.apply:apply_cmd", "Compile STATE_FILE and apply it to the kernel in one atomic batch."),
    "agent": ("connguard.cli.agent:agent_cmd", "Run the host agent: apply, repair drift, persist and escalate bans."),
    "status": ("connguard.cli.status:status_cmd", "Show what this host enforces: protected ports, their rules with "
               "hit counters, offenders and active bans."),
    "lab": ("connguard.cli.lab:lab", "Network-namespace lab: hosts with VMs, clients, real traffic."),
    "server": ("connguard.cli.server:server_cmd", "Run the REST API server (migrates an SQLite database first; see --migrate)."),
    "service": ("connguard.cli.service:service", "systemd units for the server and the agent."),
    "db": ("connguard.cli.db:db", "The server database's schema: upgrade it, check it, show its revision."),
    "up": ("connguard.cli.up:up_cmd", "Run the API server and this host's agent in one process (Ctrl-C stops both)."),
    # control plane: thin wrappers over the REST API
    "token": ("connguard.cli.token:token", "API tokens (roles: admin, member, reader, agent)."),
    "policy": ("connguard.cli.resources.policy:policy", "QoS policies (sets of connection rules)."),
    "rule": ("connguard.cli.resources.rule:rule", "Rules of a QoS policy."),
    "rule-type": ("connguard.cli.resources.rule:rule_type", "Rule types and the parameters each supports."),
    "port": ("connguard.cli.resources.port:port", "Ports (VM interfaces) and the policy they carry."),
    "ban": ("connguard.cli.resources.ban:ban", "Bans: remotes refused everywhere they apply."),
    "allow": ("connguard.cli.resources.allow:allow", "Allowlist: remotes never limited per source or banned (per-port limits still apply)."),
    "event": ("connguard.cli.resources.event:event", "Events: bans, unbans, limit exceedances, port errors, and who changed what."),
    # the CLI itself
    "help": ("connguard.cli.help:help_cmd", "Print the help of a command, or of every command (--all)."),
    "completion": ("connguard.cli.help:completion_cmd", "Print the shell completion script for SHELL."),
}


def load(name: str) -> click.Command | None:
    """The click command registered as ``name``, importing its module; None if unknown or not
    installed in this build (a module that does not exist yet)."""
    target = COMMANDS.get(name)
    if target is None:
        return None
    module, attr = target[0].split(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        return None
    command = getattr(mod, attr)
    if name == "lab" and "demo" not in command.commands:
        from connguard.cli import demo

        command.add_command(demo.demo)
    return command


def _available(name: str) -> bool:
    return importlib.util.find_spec(COMMANDS[name][0].split(":")[0]) is not None


class LazyGroup(click.Group):
    """click's documented LazyGroup pattern: commands are looked up, and imported, by name."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(n for n in COMMANDS if _available(n))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return load(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Short help from the table: listing the commands imports none of them.
        rows = [(n, COMMANDS[n][1]) for n in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="connguard")
def cli() -> None:
    """Connection-abuse protection for cloud VMs (nftables + conntrack)."""


def main() -> None:
    try:
        # The name fixed, not argv[0]'s: usage lines and the completion variable
        # (_CONNGUARD_COMPLETE, connguard.cli.help) are the same however connguard is started.
        cli(prog_name="connguard")
    except ModuleNotFoundError as exc:
        # An optional dependency a command imports lazily (connguard.extras): name the extra
        # to install rather than end on a traceback.
        from connguard.extras import from_import_error

        command = next((a for a in sys.argv[1:] if not a.startswith("-")), "")
        missing = from_import_error(exc, f"connguard {command}".strip())
        if missing is None:
            raise
        click.echo(f"Error: {missing}", err=True)
        sys.exit(1)
