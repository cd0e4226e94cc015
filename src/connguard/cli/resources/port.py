"""``connguard port create|list|show|set|unset|delete``."""

from __future__ import annotations

from typing import Any

import click

from connguard.cli.client import Client, connection, emit_list, emit_one, lister, output
from connguard.cli.resources.policy import policy_id

COLUMNS = ["id", "name", "binding:host_id", "interface_name", "fixed_ips", "qos_policy_id",
           "effective_qos_policy_id"]
LONG_COLUMNS = ["mac_address", "project_id", "status", "revision_number"]


def port_id(client: Client, name_or_id: str) -> str:
    """The id of a port named by id or by a name unique among those the caller sees."""
    return client.resolve("ports", "ports", name_or_id, what="port")


def fixed_ips(value: object) -> str:
    """A port's addresses in a table, one per line."""
    if not isinstance(value, list):
        return str(value)
    return "\n".join(str(ip.get("ip_address")) if isinstance(ip, dict) else str(ip) for ip in value)


HUMAN = {"fixed_ips": fixed_ips}


def _body(name: str | None, host: str | None, fixed_ips: tuple[str, ...], mac: str | None,
          interface_name: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if name is not None:
        body["name"] = name
    if host is not None:
        body["binding:host_id"] = host
    if fixed_ips:
        body["fixed_ips"] = [{"ip_address": ip} for ip in fixed_ips]
    if mac is not None:
        body["mac_address"] = mac
    if interface_name is not None:
        body["interface_name"] = interface_name
    return body


def _port_options(fn: Any) -> Any:
    for opt in reversed([
        click.option("--name", help="Port name (names can stand for ids in every command)."),
        click.option("--host", help="binding:host_id: the host whose agent protects the port."),
        click.option("--fixed-ip", "fixed_ips", multiple=True, help="An address of the port (repeatable)."),
        click.option("--mac-address", "mac", help="The VM interface's MAC address."),
        click.option("--interface-name", help="Host interface (default tap + id[:11])."),
        click.option("--qos-policy", "qos_policy", help="Policy name or id."),
    ]):
        fn = opt(fn)
    return fn


@click.group()
def port() -> None:
    """Ports (VM interfaces) and the policy they carry."""


@port.command("create")
@_port_options
@click.option("--id", "port_id", help="Keep this id (e.g. Neutron's).")
@click.option("--project", help="Owning project (admin).")
@connection
@output
def create(client: Client, fmt: str, columns: tuple[str, ...], qos_policy: str | None, port_id: str | None,
           project: str | None, **fields: Any) -> None:
    """Create a port: a VM interface on --host, protected by its policy."""
    body = _body(**fields)
    if qos_policy:
        body["qos_policy_id"] = policy_id(client, qos_policy)
    if port_id:
        body["id"] = port_id
    if project:
        body["project_id"] = project
    emit_one(client.post("ports", {"port": body})["port"], fmt=fmt, columns=columns, human=HUMAN)


@port.command("list")
@click.option("--host", help="Only ports bound to this host.")
@connection
@lister
def list_(client: Client, fmt: str, columns: tuple[str, ...], page: dict[str, Any], host: str | None) -> None:
    """List the ports you can see; --long adds MAC address, project, status and revision."""
    rows = client.get("ports", **({"binding:host_id": host} if host else {}), **page)["ports"]
    emit_list(rows, default=COLUMNS, long=LONG_COLUMNS, fmt=fmt, columns=columns, human=HUMAN)


@port.command("show")
@click.argument("port")
@connection
@output
def show(client: Client, port: str, fmt: str, columns: tuple[str, ...]) -> None:
    """Show PORT (a name or id)."""
    emit_one(client.get(f"ports/{port_id(client, port)}")["port"], fmt=fmt, columns=columns, human=HUMAN)


@port.command("set")
@click.argument("port")
@_port_options
@click.option("--if-revision", type=int, metavar="N",
              help="Change nothing unless the port is at revision N (its revision_number).")
@connection
@output
def set_(client: Client, port: str, fmt: str, columns: tuple[str, ...], qos_policy: str | None,
         if_revision: int | None, **fields: Any) -> None:
    """Change fields of PORT (a name or id)."""
    body = _body(**fields)
    if qos_policy:
        body["qos_policy_id"] = policy_id(client, qos_policy)
    if not body:
        raise click.UsageError("nothing to set")
    out = client.put(f"ports/{port_id(client, port)}", {"port": body}, if_match=if_revision)["port"]
    emit_one(out, fmt=fmt, columns=columns, human=HUMAN)


@port.command("unset")
@click.argument("port")
@click.option("--qos-policy", is_flag=True, required=True, help="Detach the port's own policy.")
@connection
@output
def unset(client: Client, port: str, qos_policy: bool, fmt: str, columns: tuple[str, ...]) -> None:
    """Detach the policy of PORT (a name or id): the project's default applies again."""
    out = client.put(f"ports/{port_id(client, port)}", {"port": {"qos_policy_id": None}})["port"]
    emit_one(out, fmt=fmt, columns=columns, human=HUMAN)


@port.command("delete")
@click.argument("ports", nargs=-1, required=True)
@connection
def delete(client: Client, ports: tuple[str, ...]) -> None:
    """Delete PORTS (names or ids)."""
    for p in ports:
        client.delete(f"ports/{port_id(client, p)}")
