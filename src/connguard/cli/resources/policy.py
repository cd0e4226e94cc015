"""``connguard policy create|list|show|set|delete``."""

from __future__ import annotations

from typing import Any

import click

from connguard.cli.client import Client, connection, emit_list, emit_one, output

COLUMNS = ["id", "name", "project_id", "shared", "is_default", "enforcement", "revision_number"]
ENFORCEMENT = click.Choice(["enforce", "monitor"])


def policy_id(client: Client, name_or_id: str) -> str:
    return client.resolve("qos/policies", "policies", name_or_id)


@click.group()
def policy() -> None:
    """QoS policies (sets of connection rules)."""


@policy.command("create")
@click.argument("name")
@click.option("--description")
@click.option("--enforcement", type=ENFORCEMENT)
@click.option("--share", "shared", is_flag=True, default=None, help="Visible to every project (admin).")
@click.option("--default", "is_default", is_flag=True, default=None, help="The project's default policy.")
@click.option("--tag", "tags", multiple=True)
@click.option("--project", help="Owning project (admin).")
@connection
@output
def create(client: Client, name: str, fmt: str, columns: tuple[str, ...], project: str | None,
           tags: tuple[str, ...], **fields: Any) -> None:
    body = {"name": name, **{k: v for k, v in fields.items() if v is not None}}
    if tags:
        body["tags"] = list(tags)
    if project:
        body["project_id"] = project
    emit_one(client.post("qos/policies", {"policy": body})["policy"], fmt=fmt, columns=columns)


@policy.command("list")
@click.option("--project", help="Only this project's policies.")
@click.option("--name")
@connection
@output
def list_(client: Client, fmt: str, columns: tuple[str, ...], project: str | None, name: str | None) -> None:
    rows = client.get("qos/policies", project_id=project, name=name)["policies"]
    emit_list(rows, default=COLUMNS, fmt=fmt, columns=columns)


@policy.command("show")
@click.argument("policy")
@connection
@output
def show(client: Client, policy: str, fmt: str, columns: tuple[str, ...]) -> None:
    emit_one(client.get(f"qos/policies/{policy_id(client, policy)}")["policy"], fmt=fmt, columns=columns)


@policy.command("set")
@click.argument("policy")
@click.option("--name")
@click.option("--description")
@click.option("--enforcement", type=ENFORCEMENT)
@click.option("--share/--no-share", "shared", default=None)
@click.option("--default/--no-default", "is_default", default=None)
@click.option("--if-revision", type=int, help="Fail (412) unless the policy is at this revision.")
@connection
@output
def set_(client: Client, policy: str, fmt: str, columns: tuple[str, ...], if_revision: int | None,
         **fields: Any) -> None:
    body = {k: v for k, v in fields.items() if v is not None}
    if not body:
        raise click.UsageError("nothing to set")
    out = client.put(f"qos/policies/{policy_id(client, policy)}", {"policy": body}, if_match=if_revision)
    emit_one(out["policy"], fmt=fmt, columns=columns)


@policy.command("delete")
@click.argument("policies", nargs=-1, required=True)
@connection
def delete(client: Client, policies: tuple[str, ...]) -> None:
    for name in policies:
        client.delete(f"qos/policies/{policy_id(client, name)}")
