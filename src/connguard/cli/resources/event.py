"""``connguard event list``."""

from __future__ import annotations

import click

from connguard.cli.client import Client, connection, emit_list, output

COLUMNS = ["created_at", "event_type", "ip_address", "port_id", "host", "count", "message"]


@click.group()
def event() -> None:
    """Events: bans, unbans, limit exceedances, port errors."""


@event.command("list")
@click.option("--type", "event_type")
@click.option("--port", "port_id")
@click.option("--limit", type=int)
@connection
@output
def list_(client: Client, fmt: str, columns: tuple[str, ...], event_type: str | None, port_id: str | None,
          limit: int | None) -> None:
    rows = client.get("connguard/events", event_type=event_type, port_id=port_id, limit=limit,
                      sort_key="created_at", sort_dir="desc")["events"]
    emit_list(rows, default=COLUMNS, fmt=fmt, columns=columns)
