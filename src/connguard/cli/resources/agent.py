"""``connguard agent list`` (the ``agent`` daemon itself is another command module's)."""

from __future__ import annotations

from typing import Any

import click

from connguard.cli.client import Client, connection, emit_list, lister

COLUMNS = ["id", "agent_type", "host", "alive", "admin_state_up", "heartbeat_timestamp"]
LONG_COLUMNS = ["version", "started_at", "conntrack_count", "conntrack_max", "apply_latency_seconds"]


@click.group()
def agent() -> None:
    """Agents known to the server."""


@agent.command("list")
@connection
@lister
def list_(client: Client, fmt: str, columns: tuple[str, ...], page: dict[str, Any]) -> None:
    """List the agents that have reported to the server (alive: a heartbeat lately); --long adds
    version, start time, conntrack use and apply latency."""
    emit_list(client.get("agents", **page)["agents"], default=COLUMNS, long=LONG_COLUMNS, fmt=fmt, columns=columns)
