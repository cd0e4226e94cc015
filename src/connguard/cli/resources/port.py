"""``connguard port create|list|show|set|unset|delete``."""

from __future__ import annotations

from typing import Any

import click

from connguard.cli.client import Client, connection, emit_list, emit_one, output
from connguard.cli.resources.policy import policy_id

COLUMNS = ["id", "name", "binding:host_id", "interface_name", "fixed_ips", "qos_policy_id",
           "effective_qos_policy_id"]


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
        click.option("--name"),
        click.option("--host", help="binding:host_id: the host whose agent protects the port."),
        click.option("--fixed-ip", "fixed_ips", multiple=True, help="An address of the port (repeatable)."),
        click.option("--mac-address", "mac"),
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
    body = _body(**fields)
    if qos_policy:
        body["qos_policy_id"] = policy_id(client, qos_policy)
    if port_id:
        body["id"] = port_id
    if project:
        body["project_id"] = project
    emit_one(client.post("ports", {"port": body})["port"], fmt=fmt, columns=columns)


@port.command("list")
@click.option("--host")
@connection
@output
def list_(client: Client, fmt: str, columns: tuple[str, ...], host: str | None) -> None:
    rows = client.get("ports", **({"binding:host_id": host} if host else {}))["ports"]
    emit_list(rows, default=COLUMNS, fmt=fmt, columns=columns)


@port.command("show")
@click.argument("port_id")
@connection
@output
def show(client: Client, port_id: str, fmt: str, columns: tuple[str, ...]) -> None:
    emit_one(client.get(f"ports/{client.resolve('ports', 'ports', port_id)}")["port"], fmt=fmt, columns=columns)


@port.command("set")
@click.argument("port_id")
@_port_options
@click.option("--if-revision", type=int)
@connection
@output
def set_(client: Client, port_id: str, fmt: str, columns: tuple[str, ...], qos_policy: str | None,
         if_revision: int | None, **fields: Any) -> None:
    body = _body(**fields)
    if qos_policy:
        body["qos_policy_id"] = policy_id(client, qos_policy)
    if not body:
        raise click.UsageError("nothing to set")
    pid = client.resolve("ports", "ports", port_id)
    emit_one(client.put(f"ports/{pid}", {"port": body}, if_match=if_revision)["port"], fmt=fmt, columns=columns)


@port.command("unset")
@click.argument("port_id")
@click.option("--qos-policy", is_flag=True, required=True, help="Detach the port's own policy.")
@connection
@output
def unset(client: Client, port_id: str, qos_policy: bool, fmt: str, columns: tuple[str, ...]) -> None:
    pid = client.resolve("ports", "ports", port_id)
    emit_one(client.put(f"ports/{pid}", {"port": {"qos_policy_id": None}})["port"], fmt=fmt, columns=columns)


@port.command("delete")
@click.argument("ports", nargs=-1, required=True)
@connection
def delete(client: Client, ports: tuple[str, ...]) -> None:
    for p in ports:
        client.delete(f"ports/{client.resolve('ports', 'ports', p)}")
