"""``connguard policy create|list|show|set|delete``."""

from __future__ import annotations

from typing import Any

import click

from connguard.cli.client import Client, connection, emit_list, emit_one, lister, output

COLUMNS = ["id", "name", "project_id", "shared", "is_default", "enforcement", "revision_number"]
LONG_COLUMNS = ["description", "tags", "rules"]
ENFORCEMENT = click.Choice(["enforce", "monitor"])
ENFORCEMENT_HELP = "enforce: refuse what exceeds the rules; monitor: count and report it, drop nothing."


def policy_id(client: Client, name_or_id: str) -> str:
    """The id of a policy named by id or by a name unique among those the caller sees."""
    return client.resolve("qos/policies", "policies", name_or_id, what="policy")


def rules_summary(rules: Any) -> str:
    """A policy's rules in a table: one line per rule, its type and id."""
    if not isinstance(rules, list):
        return str(rules)
    return "\n".join(f"{r.get('type')} {r.get('id')}" for r in rules)


HUMAN = {"rules": rules_summary}


@click.group()
def policy() -> None:
    """QoS policies (sets of connection rules)."""


@policy.command("create")
@click.argument("name")
@click.option("--description", help="Free text.")
@click.option("--enforcement", type=ENFORCEMENT, help=ENFORCEMENT_HELP + " [default: enforce]")
@click.option("--share", "shared", is_flag=True, default=None, help="Visible to every project (admin).")
@click.option("--default", "is_default", is_flag=True, default=None,
              help="The project's default policy (ports without a policy of their own get it).")
@click.option("--tag", "tags", multiple=True, help="A tag (repeatable).")
@click.option("--project", help="Owning project (admin).")
@connection
@output
def create(client: Client, name: str, fmt: str, columns: tuple[str, ...], project: str | None,
           tags: tuple[str, ...], **fields: Any) -> None:
    """Create a policy named NAME (add rules with `connguard rule create NAME`)."""
    body = {"name": name, **{k: v for k, v in fields.items() if v is not None}}
    if tags:
        body["tags"] = list(tags)
    if project:
        body["project_id"] = project
    emit_one(client.post("qos/policies", {"policy": body})["policy"], fmt=fmt, columns=columns)


@policy.command("list")
@click.option("--project", help="Only this project's policies.")
@click.option("--name", help="Only policies of this name.")
@connection
@lister
def list_(client: Client, fmt: str, columns: tuple[str, ...], page: dict[str, Any], project: str | None,
          name: str | None) -> None:
    """List the policies you can see; --long adds description, tags and rules."""
    rows = client.get("qos/policies", project_id=project, name=name, **page)["policies"]
    emit_list(rows, default=COLUMNS, long=LONG_COLUMNS, fmt=fmt, columns=columns, human=HUMAN)


@policy.command("show")
@click.argument("policy")
@connection
@output
def show(client: Client, policy: str, fmt: str, columns: tuple[str, ...]) -> None:
    """Show POLICY (a name or id) with its rules."""
    emit_one(client.get(f"qos/policies/{policy_id(client, policy)}")["policy"], fmt=fmt, columns=columns, human=HUMAN)


@policy.command("set")
@click.argument("policy")
@click.option("--name", help="New name.")
@click.option("--description", help="Free text.")
@click.option("--enforcement", type=ENFORCEMENT, help=ENFORCEMENT_HELP)
@click.option("--share/--no-share", "shared", default=None, help="Visible to every project, or not (admin).")
@click.option("--default/--no-default", "is_default", default=None,
              help="Make it the project's default policy, or stop it being that.")
@click.option("--if-revision", type=int, metavar="N",
              help="Change nothing unless the policy is at revision N (its revision_number).")
@connection
@output
def set_(client: Client, policy: str, fmt: str, columns: tuple[str, ...], if_revision: int | None,
         **fields: Any) -> None:
    """Change fields of POLICY (a name or id)."""
    body = {k: v for k, v in fields.items() if v is not None}
    if not body:
        raise click.UsageError("nothing to set")
    out = client.put(f"qos/policies/{policy_id(client, policy)}", {"policy": body}, if_match=if_revision)
    emit_one(out["policy"], fmt=fmt, columns=columns)


@policy.command("delete")
@click.argument("policies", nargs=-1, required=True)
@connection
def delete(client: Client, policies: tuple[str, ...]) -> None:
    """Delete POLICIES (names or ids); one used by a port is refused."""
    for name in policies:
        client.delete(f"qos/policies/{policy_id(client, name)}")
