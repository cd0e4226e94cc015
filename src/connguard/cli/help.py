"""``connguard help [COMMAND...] [--all]`` and ``connguard completion bash|zsh|fish``.

Both read the one source there is, the click command tree: ``help`` prints the ``--help``
page of a command (``--all``: of every command and subcommand, one after another, the
reference docs/cli.md points to), and ``completion`` prints click's own completion script for
a shell, which asks ``connguard`` itself for candidates at each <TAB> (command names,
subcommands, options and choices, e.g. ``--scope remote-ip``)."""

from __future__ import annotations

from typing import Iterator

import click


def walk(command: click.Command, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """(command path, command) of ``command`` and every subcommand below it, depth first."""
    yield path, command
    if isinstance(command, click.Group):
        ctx = click.Context(command, info_name=path[-1])
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                yield from walk(sub, (*path, name))


def help_page(root: click.Command, path: tuple[str, ...]) -> str:
    """The --help text of the command at ``path`` (``("connguard", "rule", "create")``)."""
    ctx = click.Context(root, info_name=path[0])
    command = root
    for name in path[1:]:
        if not isinstance(command, click.Group):
            raise click.UsageError(f"{' '.join(path[:path.index(name)])} has no subcommands")
        sub = command.get_command(ctx, name)
        if sub is None:
            raise click.UsageError(f"no command {' '.join(path[:path.index(name) + 1])!r}")
        ctx = click.Context(sub, info_name=name, parent=ctx)
        command = sub
    return command.get_help(ctx)


@click.command("help")
@click.argument("command", nargs=-1)
@click.option("--all", "all_", is_flag=True, help="Print the help of every command and subcommand.")
def help_cmd(command: tuple[str, ...], all_: bool) -> None:
    """Print the help of a command, or of every command (--all).

    COMMAND is a command path, e.g. `connguard help rule create`; with --all, every command
    below it (or every command at all) one after another, the whole reference in one text."""
    from connguard.cli.main import cli

    if not all_:
        click.echo(help_page(cli, ("connguard", *command)))
        return
    start = ("connguard", *command)
    root_help = help_page(cli, start)  # checks the path
    del root_help
    pages = []
    for path, _ in walk(cli, ("connguard",)):
        if path[:len(start)] == start:
            title = " ".join(path)
            pages.append(f"{title}\n{'=' * len(title)}\n\n{help_page(cli, path)}\n")
    click.echo("\n".join(pages), nl=False)


SHELLS = ("bash", "zsh", "fish")


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
def completion_cmd(shell: str) -> None:
    """Print the shell completion script for SHELL.

    Load it with, e.g., `eval "$(connguard completion bash)"` in ~/.bashrc, or save it as
    /etc/bash_completion.d/connguard (zsh: `eval "$(connguard completion zsh)"` in ~/.zshrc;
    fish: `connguard completion fish > ~/.config/fish/completions/connguard.fish`)."""
    from click.shell_completion import get_completion_class

    from connguard.cli.main import cli

    comp_cls = get_completion_class(shell)
    assert comp_cls is not None  # bash, zsh and fish are click's own
    comp = comp_cls(cli, {}, "connguard", "_CONNGUARD_COMPLETE")
    click.echo(comp.source())
