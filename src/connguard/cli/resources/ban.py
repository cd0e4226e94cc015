"""``connguard ban list|add|delete``."""

from __future__ import annotations

from typing import Any

import click

from connguard.cli.client import Client, connection, emit_list, emit_one, output

COLUMNS = ["id", "ip_address", "scope", "origin", "port_id", "project_id", "expires_at", "reason"]


@click.group()
def ban() -> None:
    """Bans: remotes refused everywhere they apply."""


@ban.command("list")
@click.option("--origin", type=click.Choice(["detected", "manual", "shared"]))
@click.option("--port", "port_id")
@connection
@output
def list_(client: Client, fmt: str, columns: tuple[str, ...], origin: str | None, port_id: str | None) -> None:
    rows = client.get("connguard/bans", origin=origin, port_id=port_id)["bans"]
    emit_list(rows, default=COLUMNS, fmt=fmt, columns=columns)


@ban.command("add")
@click.argument("ip_address")
@click.option("--port", "port_id", help="Ban towards this port only.")
@click.option("--seconds", type=int, help="Ban length (default: until deleted).")
@click.option("--reason")
@click.option("--cloud", is_flag=True, help="Cloud-wide ban (admin).")
@connection
@output
def add(client: Client, ip_address: str, fmt: str, columns: tuple[str, ...], cloud: bool, **fields: Any) -> None:
    body = {"ip_address": ip_address, **{k: v for k, v in fields.items() if v is not None}}
    if cloud:
        body["scope"] = "cloud"
    emit_one(client.post("connguard/bans", {"ban": body})["ban"], fmt=fmt, columns=columns)


@ban.command("delete")
@click.argument("bans", nargs=-1, required=True)
@connection
def delete(client: Client, bans: tuple[str, ...]) -> None:
    """Unban everywhere."""
    for b in bans:
        client.delete(f"connguard/bans/{b}")
