"""``connguard ban list|add|delete``."""

from __future__ import annotations

from typing import Any

import click

from connguard.cli.client import Client, connection, emit_list, emit_one, lister, output
from connguard.cli.resources._delete import delete_each
from connguard.cli.resources.port import port_id

COLUMNS = ["id", "ip_address", "scope", "origin", "port_id", "project_id", "expires_at", "reason"]
LONG_COLUMNS = ["host", "created_at", "offence_count"]


@click.group()
def ban() -> None:
    """Bans: remotes refused everywhere they apply."""


@ban.command("list")
@click.option("--origin", type=click.Choice(["detected", "manual", "shared"]),
              help="Only bans an agent detected, an operator made, or a shared rule spread.")
@click.option("--port", "port", help="Only bans towards this port (a name or id).")
@connection
@lister
def list_(client: Client, fmt: str, columns: tuple[str, ...], page: dict[str, Any], origin: str | None,
          port: str | None) -> None:
    """List active bans; --long adds host, creation time and offence count."""
    rows = client.get("connguard/bans", origin=origin, port_id=port_id(client, port) if port else None,
                      **page)["bans"]
    emit_list(rows, default=COLUMNS, long=LONG_COLUMNS, fmt=fmt, columns=columns)


@ban.command("add")
@click.argument("ip_address")
@click.option("--port", "port", help="Ban towards this port only (a name or id).")
@click.option("--seconds", type=click.IntRange(1, 365 * 86400),
              help="Ban length in seconds (default: 14400, 4 hours).")
@click.option("--reason", help="Free text, shown by ban list and in events.")
@click.option("--cloud", is_flag=True, help="Cloud-wide ban (admin).")
@click.option("--force", is_flag=True,
              help="Accept a prefix wider than the server's limit (default /16 for IPv4, /32 for IPv6), "
                   "0.0.0.0/0 and ::/0 included.")
@connection
@output
def add(client: Client, ip_address: str, fmt: str, columns: tuple[str, ...], cloud: bool, force: bool,
        port: str | None, **fields: Any) -> None:
    """Ban IP_ADDRESS (an address or a prefix) for --seconds (default 4 hours)."""
    body = {"ip_address": ip_address, **{k: v for k, v in fields.items() if v is not None}}
    if port:
        body["port_id"] = port_id(client, port)
    if cloud:
        body["scope"] = "cloud"
    if force:
        body["force"] = True
    emit_one(client.post("connguard/bans", {"ban": body})["ban"], fmt=fmt, columns=columns)


@ban.command("delete")
@click.argument("bans", nargs=-1, required=True)
@click.option("--netns", metavar="NS", help="Standalone host: lift the bans in this network namespace's kernel and "
              "its agent's ban book (no server).")
@click.option("--local", is_flag=True, help="Standalone host: the same in this namespace (no server).")
@click.option("--port", "port", metavar="IFNAME", help="With --netns/--local: only the ban on this port.")
@connection
def delete(client: Client, bans: tuple[str, ...], netns: str | None, local: bool, port: str | None) -> None:
    """Unban everywhere. Each of BANS is a ban id, or an address or prefix: every active ban
    of it that you see is lifted. Goes on past a failure, then exits 1.

    With --netns NS (or --local) the bans are lifted on this host alone, with no server: from
    the kernel and from the standalone agent's ban book, so the agent does not put them back."""
    if netns or local:
        from connguard.cli.unban_local import lift

        lift(bans, netns=netns, port=port)
        return
    if port:
        raise click.UsageError("--port goes with --netns or --local")
    delete_each(client, bans, collection="connguard/bans", key="bans", field="ip_address", what="ban",
                plural="bans")
