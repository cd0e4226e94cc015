"""``connguard allow add|list|delete``."""

from __future__ import annotations

import click

from typing import Any

from connguard.cli.client import Client, connection, emit_list, emit_one, lister, output
from connguard.cli.resources._delete import delete_each

COLUMNS = ["id", "remote_ip_prefix", "project_id", "description"]
LONG_COLUMNS = ["created_at", "updated_at", "revision_number"]


@click.group()
def allow() -> None:
    """Allowlist: remotes never limited per source or banned (per-port limits still apply)."""


@allow.command("add")
@click.argument("remote_ip_prefix")
@click.option("--description", help="Free text (whose office, why).")
@click.option("--cloud", is_flag=True, help="Cloud-wide entry, project_id null (admin).")
@click.option("--force", is_flag=True,
              help="Accept a cloud-wide prefix wider than the server's limit (default /16 for IPv4, /32 for "
                   "IPv6), 0.0.0.0/0 and ::/0 included.")
@connection
@output
def add(client: Client, remote_ip_prefix: str, description: str | None, cloud: bool, force: bool, fmt: str,
        columns: tuple[str, ...]) -> None:
    """Allowlist REMOTE_IP_PREFIX (an address or prefix) for your project, or --cloud."""
    body: dict = {"remote_ip_prefix": remote_ip_prefix}
    if force:
        body["force"] = True
    if description is not None:
        body["description"] = description
    if cloud:
        body["project_id"] = None
    emit_one(client.post("connguard/allowlist", {"allowlist_entry": body})["allowlist_entry"], fmt=fmt,
             columns=columns)


@allow.command("list")
@connection
@lister
def list_(client: Client, fmt: str, columns: tuple[str, ...], page: dict[str, Any]) -> None:
    """List allowlist entries; --long adds times and revision."""
    rows = client.get("connguard/allowlist", **page)["allowlist"]
    emit_list(rows, default=COLUMNS, long=LONG_COLUMNS, fmt=fmt, columns=columns)


@allow.command("delete")
@click.argument("entries", nargs=-1, required=True)
@connection
def delete(client: Client, entries: tuple[str, ...]) -> None:
    """Delete allowlist ENTRIES, each an id or a prefix (every entry of it that you
    see). Goes on past a failure, then exits 1."""
    delete_each(client, entries, collection="connguard/allowlist", key="allowlist", field="remote_ip_prefix",
                what="allowlist entry", plural="allowlist entries")
