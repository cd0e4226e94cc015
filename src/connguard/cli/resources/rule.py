"""``connguard rule create|list|show|set|delete --type T`` and ``connguard rule-type list|show``.

The field options are derived from the model's rule classes (``--max-cps``, ``--profile``...):
a field means the same on the command line, over HTTP and in a state file."""

from __future__ import annotations

import typing
from typing import Any, Callable

import click

from connguard.cli.client import Client, connection, emit_list, emit_one, output
from connguard.cli.resources.policy import policy_id
from connguard.db.services.rule_types import flatten_annotation
from connguard.model.rules import RULE_TYPES

TYPES = {t.replace("_", "-"): t for t in RULE_TYPES}
COLUMNS = ["id", "type", "direction", "qos_policy_id"]


def _option_type(annotations: list[Any]) -> Any:
    """A click type for a field over every rule class that has it (choices are united)."""
    bases = [b for a in annotations for b in flatten_annotation(a)[0]]
    literals = [str(v) for b in bases if typing.get_origin(b) is typing.Literal for v in typing.get_args(b)]
    if literals:
        return click.Choice(list(dict.fromkeys(literals)))
    for python_type, click_type in ((bool, click.BOOL), (int, click.INT), (float, click.FLOAT)):
        if python_type in bases:
            return click_type
    return click.STRING


def _field_options() -> dict[str, Any]:
    annotations: dict[str, list[Any]] = {}
    for cls in RULE_TYPES.values():
        for name, info in cls.model_fields.items():
            if name != "type":
                annotations.setdefault(name, []).append(info.annotation)
    return {name: _option_type(anns) for name, anns in annotations.items()}


FIELDS = _field_options()


def rule_fields(fn: Callable) -> Callable:
    for name, typ in reversed(FIELDS.items()):
        fn = click.option(f"--{name.replace('_', '-')}", name, type=typ, default=None)(fn)
    return fn


def _type_option(required: bool) -> Callable:
    return click.option("--type", "rule_type", type=click.Choice(sorted(TYPES)), required=required,
                        help="Rule type.")


def _path(policy: str, rule_type: str) -> str:
    return f"qos/policies/{policy}/{TYPES[rule_type]}_rules"


@click.group()
def rule() -> None:
    """Rules of a QoS policy."""


@rule.command("create")
@click.argument("policy")
@_type_option(True)
@rule_fields
@connection
@output
def create(client: Client, policy: str, rule_type: str, fmt: str, columns: tuple[str, ...], **fields: Any) -> None:
    body = {k: v for k, v in fields.items() if v is not None}
    one = f"{TYPES[rule_type]}_rule"
    out = client.post(_path(policy_id(client, policy), rule_type), {one: body})[one]
    emit_one(out, fmt=fmt, columns=columns)


@rule.command("list")
@click.argument("policy")
@_type_option(False)
@connection
@output
def list_(client: Client, policy: str, rule_type: str | None, fmt: str, columns: tuple[str, ...]) -> None:
    pid = policy_id(client, policy)
    if rule_type:
        rows = client.get(_path(pid, rule_type))[f"{TYPES[rule_type]}_rules"]
    else:
        rows = client.get(f"qos/policies/{pid}")["policy"]["rules"]
    emit_list(rows, default=COLUMNS, fmt=fmt, columns=columns)


@rule.command("show")
@click.argument("policy")
@click.argument("rule_id")
@_type_option(True)
@connection
@output
def show(client: Client, policy: str, rule_id: str, rule_type: str, fmt: str, columns: tuple[str, ...]) -> None:
    one = f"{TYPES[rule_type]}_rule"
    emit_one(client.get(f"{_path(policy_id(client, policy), rule_type)}/{rule_id}")[one], fmt=fmt, columns=columns)


@rule.command("set")
@click.argument("policy")
@click.argument("rule_id")
@_type_option(True)
@rule_fields
@click.option("--if-revision", type=int, help="Fail (412) unless the rule is at this revision.")
@connection
@output
def set_(client: Client, policy: str, rule_id: str, rule_type: str, fmt: str, columns: tuple[str, ...],
         if_revision: int | None, **fields: Any) -> None:
    body = {k: v for k, v in fields.items() if v is not None}
    if not body:
        raise click.UsageError("nothing to set")
    one = f"{TYPES[rule_type]}_rule"
    out = client.put(f"{_path(policy_id(client, policy), rule_type)}/{rule_id}", {one: body}, if_match=if_revision)
    emit_one(out[one], fmt=fmt, columns=columns)


@rule.command("delete")
@click.argument("policy")
@click.argument("rule_id")
@_type_option(True)
@connection
def delete(client: Client, policy: str, rule_id: str, rule_type: str) -> None:
    client.delete(f"{_path(policy_id(client, policy), rule_type)}/{rule_id}")


@click.group("rule-type")
def rule_type() -> None:
    """Rule types and the parameters each supports."""


@rule_type.command("list")
@connection
@output
def rule_type_list(client: Client, fmt: str, columns: tuple[str, ...]) -> None:
    emit_list(client.get("qos/rule-types")["rule_types"], default=["type"], fmt=fmt, columns=columns)


@rule_type.command("show")
@click.argument("name")
@connection
@output
def rule_type_show(client: Client, name: str, fmt: str, columns: tuple[str, ...]) -> None:
    out = client.get(f"qos/rule-types/{TYPES.get(name, name)}")["rule_type"]
    emit_one(out, fmt=fmt, columns=columns)
