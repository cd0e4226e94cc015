"""``connguard rule create|list|show|set|delete`` and ``connguard rule-type list|show``.

The field options are derived from the model's rule classes (``--max-cps``, ``--profile``...):
a field means the same on the command line, over HTTP and in a state file. Choices are spelt
with hyphens on the command line (``--scope remote-ip``, as ``--type connection-rate-limit``);
the API's underscore spelling is still accepted, with a deprecation warning. Booleans are
flag pairs (``--synproxy/--no-synproxy``).

``show``, ``set`` and ``delete`` find a rule's type from the policy's rules: ``--type`` is
only needed by ``create`` (and filters ``list``).
"""

from __future__ import annotations

import typing
from typing import Any, Callable

import click

from connguard.cli.client import ApiError, Client, connection, emit_list, emit_one, lister, output, page_in_memory
from connguard.cli.output import key_values
from connguard.cli.resources.policy import policy_id
from connguard.db.services.rule_types import flatten_annotation
from connguard.model.rules import RULE_TYPES

TYPES = {t.replace("_", "-"): t for t in RULE_TYPES}
COLUMNS = ["id", "type", "direction", "qos_policy_id"]
LONG_COLUMNS = ["parameters"]
# Keys every rule has: the rest of a rule's keys are its parameters (the --long column).
COMMON = {"id", "type", "direction", "qos_policy_id", "revision_number", "created_at", "updated_at",
          "project_id", "tenant_id"}

FIELD_HELP = {
    "protocol": "Match this L4 protocol only.",
    "ethertype": "Match this IP version only (default both).",
    "port_range_min": "First service port matched (the VM's for ingress, the remote's for egress).",
    "port_range_max": "Last service port matched (default: --port-range-min).",
    "remote_ip_prefix": "Match remotes in this prefix only.",
    "direction": "Traffic towards the VM (ingress), from it (egress) or both (any: one shared quota).",
    "max_cps": "New connections per second allowed.",
    "max_burst_cps": "Burst above --max-cps (default: --max-cps).",
    "scope": "Count per port in total or per remote address (IPv6 per /64).",
    "max_connections": "Concurrent connections allowed.",
    "max_syn_rate": "SYNs per second the port accepts in total.",
    "synproxy": "Answer handshakes with SYN cookies on the host (synproxy).",
    "mss": "MSS the synproxy announces.",
    "wscale": "Window scale the synproxy announces.",
    "profile": "Login service (its ports and protocol; see docs/profiles.md).",
    "max_attempts": "Connections to the service within --window that get the source banned.",
    "window": "Seconds over which --max-attempts are counted.",
    "ban_seconds": "First ban's length in seconds.",
    "ban_multiplier": "Each repeat offence multiplies the ban by this.",
    "max_ban_seconds": "Longest ban in seconds.",
    "share": "Where a ban applies: this port, the project's ports or the whole cloud.",
}


class Spelt(click.Choice):
    """A choice of API values shown with hyphens (``remote-ip``); the underscore spelling is a
    deprecated alias that still works and warns."""

    def __init__(self, values: list[str]):
        self.api = {v.replace("_", "-"): v for v in values}
        super().__init__(list(self.api))

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and value in self.api.values() and value not in self.api:
            name = param.opts[0] if param is not None else "the value"
            click.echo(f"warning: {name} {value} is deprecated; write {name} {value.replace('_', '-')}", err=True)
            return value
        return self.api[super().convert(value, param, ctx)]


def _option(name: str, annotations: list[Any], types: list[str]) -> Callable:
    """The click option of a field over every rule class that has it (choices are united)."""
    bases = [b for a in annotations for b in flatten_annotation(a)[0]]
    literals = [str(v) for b in bases if typing.get_origin(b) is typing.Literal for v in typing.get_args(b)]
    flag = f"--{name.replace('_', '-')}"
    only = "" if len(types) == len(RULE_TYPES) else f" ({', '.join(t.replace('_', '-') for t in types)} only)"
    help_ = FIELD_HELP[name] + only
    if literals:
        return click.option(flag, name, type=Spelt(list(dict.fromkeys(literals))), default=None, help=help_)
    if bool in bases:
        return click.option(f"{flag}/--no-{flag[2:]}", name, default=None, help=help_)
    for python_type, click_type in ((int, click.INT), (float, click.FLOAT)):
        if python_type in bases:
            return click.option(flag, name, type=click_type, default=None, help=help_)
    return click.option(flag, name, type=click.STRING, default=None, help=help_)


def _field_options() -> dict[str, Callable]:
    annotations: dict[str, list[Any]] = {}
    types: dict[str, list[str]] = {}
    for rule_type, cls in RULE_TYPES.items():
        for name, info in cls.model_fields.items():
            if name != "type":
                annotations.setdefault(name, []).append(info.annotation)
                types.setdefault(name, []).append(rule_type)
    return {name: _option(name, anns, types[name]) for name, anns in annotations.items()}


FIELDS = _field_options()


def rule_fields(fn: Callable) -> Callable:
    for option in reversed(FIELDS.values()):
        fn = option(fn)
    return fn


def _type_option(required: bool, help_: str) -> Callable:
    return click.option("--type", "rule_type", type=click.Choice(sorted(TYPES)), required=required, help=help_)


def _path(policy: str, rule_type: str) -> str:
    return f"qos/policies/{policy}/{rule_type}_rules"


def with_parameters(rule: dict[str, Any]) -> dict[str, Any]:
    """The rule with ``parameters``: its type's own fields that are set (the --long column)."""
    return {**rule, "parameters": {k: v for k, v in rule.items() if k not in COMMON and v is not None}}


def _locate(client: Client, policy: str, rule_id: str, rule_type: str | None) -> tuple[str, str]:
    """(rule path, API type) of RULE_ID in POLICY: --type when given, else the type the policy's
    rules say it has."""
    pid = policy_id(client, policy)
    if rule_type:
        return f"{_path(pid, TYPES[rule_type])}/{rule_id}", TYPES[rule_type]
    rules = client.get(f"qos/policies/{pid}")["policy"]["rules"]
    found = next((r for r in rules if r["id"] == rule_id), None)
    if found is None:
        raise ApiError(404, "NotFound", f"No rule with ID '{rule_id}' exists in policy '{policy}'.")
    return f"{_path(pid, found['type'])}/{rule_id}", found["type"]


@click.group()
def rule() -> None:
    """Rules of a QoS policy."""


@rule.command("create")
@click.argument("policy")
@_type_option(True, "Rule type.")
@rule_fields
@connection
@output
def create(client: Client, policy: str, rule_type: str, fmt: str, columns: tuple[str, ...], **fields: Any) -> None:
    """Add a rule of --type to POLICY (a name or id)."""
    body = {k: v for k, v in fields.items() if v is not None}
    one = f"{TYPES[rule_type]}_rule"
    out = client.post(_path(policy_id(client, policy), TYPES[rule_type]), {one: body})[one]
    emit_one(out, fmt=fmt, columns=columns)


@rule.command("list")
@click.argument("policy")
@_type_option(False, "Only rules of this type.")
@connection
@lister
def list_(client: Client, policy: str, rule_type: str | None, fmt: str, columns: tuple[str, ...],
          page: dict[str, Any]) -> None:
    """List the rules of POLICY (a name or id); --long adds each rule's parameters."""
    pid = policy_id(client, policy)
    if rule_type:
        rows = client.get(_path(pid, TYPES[rule_type]), **page)[f"{TYPES[rule_type]}_rules"]
    else:  # every type: the policy's own list, paged here
        rows = page_in_memory(client.get(f"qos/policies/{pid}")["policy"]["rules"], page)
    emit_list([with_parameters(r) for r in rows], default=COLUMNS, long=LONG_COLUMNS, fmt=fmt, columns=columns,
              human={"parameters": key_values})


@rule.command("show")
@click.argument("policy")
@click.argument("rule_id")
@_type_option(False, "The rule's type (found from the policy when omitted).")
@connection
@output
def show(client: Client, policy: str, rule_id: str, rule_type: str | None, fmt: str, columns: tuple[str, ...]) -> None:
    """Show rule RULE_ID of POLICY (a name or id)."""
    path, api_type = _locate(client, policy, rule_id, rule_type)
    emit_one(client.get(path)[f"{api_type}_rule"], fmt=fmt, columns=columns)


@rule.command("set")
@click.argument("policy")
@click.argument("rule_id")
@_type_option(False, "The rule's type (found from the policy when omitted).")
@rule_fields
@click.option("--if-revision", type=int, metavar="N",
              help="Change nothing unless the rule is at revision N (its revision_number).")
@connection
@output
def set_(client: Client, policy: str, rule_id: str, rule_type: str | None, fmt: str, columns: tuple[str, ...],
         if_revision: int | None, **fields: Any) -> None:
    """Change fields of rule RULE_ID of POLICY (a name or id)."""
    body = {k: v for k, v in fields.items() if v is not None}
    if not body:
        raise click.UsageError("nothing to set")
    path, api_type = _locate(client, policy, rule_id, rule_type)
    one = f"{api_type}_rule"
    emit_one(client.put(path, {one: body}, if_match=if_revision)[one], fmt=fmt, columns=columns)


@rule.command("delete")
@click.argument("policy")
@click.argument("rule_id")
@_type_option(False, "The rule's type (found from the policy when omitted).")
@connection
def delete(client: Client, policy: str, rule_id: str, rule_type: str | None) -> None:
    """Delete rule RULE_ID of POLICY (a name or id)."""
    client.delete(_locate(client, policy, rule_id, rule_type)[0])


@click.group("rule-type")
def rule_type() -> None:
    """Rule types and the parameters each supports."""


@rule_type.command("list")
@connection
@lister
def rule_type_list(client: Client, fmt: str, columns: tuple[str, ...], page: dict[str, Any]) -> None:
    """List the rule types this server supports."""
    emit_list(client.get("qos/rule-types", **page)["rule_types"], default=["type"], fmt=fmt, columns=columns)


@rule_type.command("show")
@click.argument("name")
@connection
@output
def rule_type_show(client: Client, name: str, fmt: str, columns: tuple[str, ...]) -> None:
    """Show rule type NAME (e.g. syn-flood) and the parameters it supports."""
    out = client.get(f"qos/rule-types/{TYPES.get(name, name)}")["rule_type"]
    emit_one(out, fmt=fmt, columns=columns)
