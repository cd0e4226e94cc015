"""``connguard allow add|list|delete``."""

from __future__ import annotations

import click

from connguard.cli.client import Client, connection, emit_list, emit_one, output

COLUMNS = ["id", "remote_ip_prefix", "project_id", "description"]


@click.group()
def allow() -> None:
    """Allowlist: remotes never limited per source or banned (per-port limits still apply)."""


@allow.command("add")
@click.argument("remote_ip_prefix")
@click.option("--description")
@click.option("--cloud", is_flag=True, help="Cloud-wide entry, project_id null (admin).")
@connection
@output
def add(client: Client, remote_ip_prefix: str, description: str | None, cloud: bool, fmt: str,
        columns: tuple[str, ...]) -> None:
    body: dict = {"remote_ip_prefix": remote_ip_prefix}
    if description is not None:
        body["description"] = description
    if cloud:
        body["project_id"] = None
    emit_one(client.post("connguard/allowlist", {"allowlist_entry": body})["allowlist_entry"], fmt=fmt,
             columns=columns)


@allow.command("list")
@connection
@output
def list_(client: Client, fmt: str, columns: tuple[str, ...]) -> None:
    emit_list(client.get("connguard/allowlist")["allowlist"], default=COLUMNS, fmt=fmt, columns=columns)


@allow.command("delete")
@click.argument("entries", nargs=-1, required=True)
@connection
def delete(client: Client, entries: tuple[str, ...]) -> None:
    for e in entries:
        client.delete(f"connguard/allowlist/{e}")
