"""``connguard agent list`` (the ``agent`` daemon itself is another command module's)."""

from __future__ import annotations

import click

from connguard.cli.client import Client, connection, emit_list, output

COLUMNS = ["id", "agent_type", "host", "alive", "admin_state_up", "heartbeat_timestamp"]


@click.group()
def agent() -> None:
    """Agents known to the server."""


@agent.command("list")
@connection
@output
def list_(client: Client, fmt: str, columns: tuple[str, ...]) -> None:
    emit_list(client.get("agents")["agents"], default=COLUMNS, fmt=fmt, columns=columns)
