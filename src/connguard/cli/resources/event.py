"""``connguard event list [--follow]`` and ``event show``. Each event names who caused it
(``actor``: ``member/project-a (5f0c1a2b)`` for a token of a project, ``agent@host-1 (…)`` for an
agent's report; empty for events no token caused)."""

from __future__ import annotations

import json
import time
from typing import Any

import click
import yaml

from connguard.cli.client import Client, cell, connection, emit_list, emit_one, lister, output
from connguard.cli.output import csv_text
from connguard.cli.resources.port import port_id

COLUMNS = ["created_at", "event_type", "ip_address", "port_id", "host", "count", "actor", "message"]
LONG_COLUMNS = ["id", "project_id", "rule_id"]
PAGE = 100


def actor(row: dict[str, Any]) -> str:
    """Who caused an event, in one cell (the API's actor_* fields)."""
    role, token = row.get("actor_role"), (row.get("actor_token_id") or "")[:8]
    if not role:
        return ""
    who = f"agent@{row.get('actor_host')}" if role == "agent" else f"{role}/{row.get('actor_project_id')}"
    return f"{who} ({token})" if token else who


def _with_actor(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "actor": actor(r)} for r in rows]


@click.group()
def event() -> None:
    """Events: bans, unbans, limit exceedances, port errors, and who changed what."""


@event.command("list")
@click.option("--type", "event_type", help="Only events of this type (e.g. ban, unban).")
@click.option("--port", "port", help="Only events of this port (a name or id).")
@click.option("--follow", is_flag=True, help="Keep printing new events as they come (Ctrl-C stops).")
@click.option("--interval", type=click.FloatRange(0.1, 60), default=1.0, show_default=True,
              help="With --follow: seconds between polls of the API.")
@connection
@lister
def list_(client: Client, fmt: str, columns: tuple[str, ...], page: dict[str, Any], event_type: str | None,
          port: str | None, follow: bool, interval: float) -> None:
    """List events, newest first; --long adds id, project and rule. With --follow, print the
    latest (--limit, default 20) oldest first, then new ones as they come."""
    pid = port_id(client, port) if port else None

    def fetch(n: int | None, marker: str | None = None) -> list[dict[str, Any]]:
        return _with_actor(client.get("connguard/events", event_type=event_type, port_id=pid, limit=n,
                                      marker=marker, sort_key="created_at", sort_dir="desc")["events"])

    if not follow:
        emit_list(fetch(page.get("limit"), page.get("marker")), default=COLUMNS, long=LONG_COLUMNS, fmt=fmt,
                  columns=columns)
        return
    try:
        _follow(fetch, first=page.get("limit") or 20, fmt=fmt, columns=list(columns) or COLUMNS, interval=interval)
    except KeyboardInterrupt:
        pass  # Ctrl-C is how one stops following: exit 0


@event.command("show")
@click.argument("event_id")
@connection
@output
def show(client: Client, fmt: str, columns: tuple[str, ...], event_id: str) -> None:
    """Show the event EVENT_ID, with who caused it (actor and the token's id, project and role)."""
    emit_one(_with_actor([client.get(f"connguard/events/{event_id}")["event"]])[0], fmt=fmt, columns=columns)


def _follow(fetch: Any, *, first: int, fmt: str, columns: list[str], interval: float) -> None:
    """Print the latest ``first`` events oldest first, then poll for new ones. A stream has
    no table: ``table`` and ``value`` print one line per event, ``json`` one object per line
    (JSON Lines), ``yaml`` one document per event."""
    seen: set[str] = set()
    rows = fetch(first)
    if fmt in ("table", "value"):
        click.echo("  ".join(columns))
    elif fmt == "csv":
        click.echo(csv_text(columns, []), nl=False)
    while True:
        new = [r for r in reversed(rows) if r["id"] not in seen]
        if seen and len(new) == len(rows) == PAGE:
            click.echo(f"warning: more than {PAGE} events since the last poll; older ones not shown", err=True)
        for row in new:
            seen.add(row["id"])
            data = {c: row.get(c) for c in columns}
            if fmt == "json":
                click.echo(json.dumps(data))
            elif fmt == "yaml":
                click.echo("---\n" + yaml.safe_dump(data, sort_keys=False), nl=False)
            elif fmt == "csv":
                click.echo(csv_text(columns, [[data[c] for c in columns]]).split("\n", 1)[1], nl=False)
            else:
                click.echo("  ".join(cell(data[c]) or "-" for c in columns))
        if len(seen) > 10 * PAGE:  # only the ids a later page can still show matter
            seen = {r["id"] for r in rows}
        time.sleep(interval)
        rows = fetch(PAGE)
