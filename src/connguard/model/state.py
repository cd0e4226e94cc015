"""The desired state of one host, and the YAML state file of standalone mode."""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field, ValidationError, model_validator

from connguard.exceptions import ValidationFailed
from connguard.model.common import Frozen
from connguard.model.objects import AllowlistEntry, Ban, Policy, Port
from connguard.names import MAX_PORTS  # noqa: F401  (per host: half the per-port sets' size)


class HostState(Frozen):
    policies: tuple[Policy, ...] = ()
    ports: tuple[Port, ...] = ()
    default_policy: Annotated[str, Field(min_length=1)] | None = None
    allowlist: tuple[AllowlistEntry, ...] = ()
    bans: tuple[Ban, ...] = ()

    @model_validator(mode="after")
    def _references(self) -> "HostState":
        if len(self.ports) > MAX_PORTS:
            # per-port state lives in sets sized twice this: they cannot fill up (fail closed)
            raise _at(("ports",), f"at most {MAX_PORTS} ports per host, got {len(self.ports)}")
        names: dict[str, int] = {}
        for i, pol in enumerate(self.policies):
            if pol.name in names:
                raise _at(("policies", i, "name"), f"duplicate policy name {pol.name!r}")
            names[pol.name] = i
        if self.default_policy is not None and self.default_policy not in names:
            raise _at(("default_policy",), f"no policy named {self.default_policy!r}")
        ifnames: dict[str, int] = {}
        owners: dict[str, int] = {}
        for i, port in enumerate(self.ports):
            if port.interface_name in ifnames:
                raise _at(("ports", i, "interface_name"), f"duplicate interface {port.interface_name!r}")
            ifnames[port.interface_name] = i
            if port.policy is not None and port.policy not in names:
                raise _at(("ports", i, "policy"), f"no policy named {port.policy!r}")
            for ip in port.fixed_ips:
                if ip in owners:
                    raise _at(("ports", i, "fixed_ips"), f"{ip} is already on ports[{owners[ip]}]")
                owners[ip] = i
        for i, ban in enumerate(self.bans):
            if ban.interface_name is not None and ban.interface_name not in ifnames:
                raise _at(("bans", i, "interface_name"), f"no port with interface {ban.interface_name!r}")
        return self

    def policy_of(self, port: Port) -> Policy | None:
        """Effective policy: the port's own, else the host's default."""
        name = port.policy or self.default_policy
        if name is None:
            return None
        return next(p for p in self.policies if p.name == name)


class _FieldError(ValueError):
    def __init__(self, loc: tuple, reason: str):
        self.loc = loc
        self.reason = reason
        super().__init__(f"{format_loc(loc)}: {reason}")


def _at(loc: tuple, reason: str) -> _FieldError:
    return _FieldError(loc, reason)


_RULE_TYPES = ("connection_rate_limit", "connection_limit", "syn_flood", "brute_force")
_UNION_TAGS = set(_RULE_TYPES)


def format_loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _UNION_TAGS or part.startswith("function-"):
            continue
        else:
            out += f".{part}" if out else str(part)
    return out


def validation_errors(exc: ValidationError) -> list[tuple[str, str]]:
    """Turn pydantic's errors into (field, reason) pairs that name the field precisely."""
    errors = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        ctx_err = (err.get("ctx") or {}).get("error")
        if isinstance(ctx_err, _FieldError):
            errors.append((format_loc(loc + ctx_err.loc), ctx_err.reason))
            continue
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        elif err["type"] == "missing":
            msg = "required field is missing"
        elif err["type"] == "union_tag_not_found":  # pydantic: "Unable to extract tag using discriminator"
            msg = f"missing 'type' (one of {', '.join(_RULE_TYPES)})"
        elif err["type"] == "union_tag_invalid":
            tag = (err.get("ctx") or {}).get("tag")
            msg = f"type {tag!r} is not one of {', '.join(_RULE_TYPES)}"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        errors.append((format_loc(loc) or "(state)", msg))
    return errors


def parse_state(data: Any, *, source: str = "state") -> HostState:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ValidationFailed([(source, "must be a mapping with policies, ports, default_policy, allowlist")])
    try:
        return HostState.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(validation_errors(exc)) from None


# libyaml's parser when PyYAML was built with it: a 10,000-port state file spent ~3 s of its
# ~3.5 s `apply` in the pure-Python parser (bench/parse_bench.py, docs/benchmarks.md). The
# constructor stays PyYAML's own (safe) one either way, so both build the same objects.
_YamlBase = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MERGE = "tag:yaml.org,2002:merge"


class _StateLoader(_YamlBase):  # type: ignore[misc, valid-type]
    """Safe loading that refuses a key given twice in one mapping: YAML keeps the last one
    silently, so a second ``ports:`` (or ``policy:``) would drop what the first one says and
    leave those ports unprotected while the file looks complete."""

    def construct_mapping(self, node, deep=False):  # noqa: ANN001 - PyYAML's signature
        merges = isinstance(node, yaml.MappingNode) and any(k.tag == _MERGE for k, _ in node.value)
        mapping = super().construct_mapping(node, deep=deep)
        # fast path: as many keys as entries means no duplicate (merged keys may override)
        if not merges and len(mapping) != len(node.value):
            first: dict = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if key in first:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first at line {first[key] + 1})", key_node.start_mark)
                first[key] = key_node.start_mark.line
        return mapping


def _no_duplicates(pairs: list) -> dict:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate key {next(k for i, k in enumerate(keys) if k in keys[:i])!r}")
    return dict(pairs)


def _json(text: str):
    """A state file written as JSON (which is YAML): parsed by the C JSON parser, 100,000 bans in
    a second where PyYAML's constructor (Python even with libyaml) takes tens of seconds. None:
    not JSON; the YAML parser then reads it (and names what is wrong)."""
    if not text.lstrip().startswith("{"):
        return None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except ValueError:
        return None


def load_state_text(text: str, *, source: str = "state") -> HostState:
    """Parse and validate the text of a state file; ``source`` names it in errors."""
    data = _json(text)
    try:
        if data is None:
            data = yaml.load(text, Loader=_StateLoader)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise ValidationFailed([(where, f"not valid YAML: {getattr(exc, 'problem', exc)}")]) from None
    if data is None or data == {}:
        # an emptied file (a truncated write, a bad template) would otherwise apply as "protect
        # nothing" and remove every port's protection
        raise ValidationFailed([(source, "the file is empty: applying it would protect nothing "
                                         "(write 'ports: []' to mean that)")])
    state = parse_state(data, source=source)
    errors = unprotecting(state)
    if errors:
        raise ValidationFailed(errors)
    return state


def unprotecting(state: HostState) -> list[tuple[str, str]]:
    """What a hand-written state file almost never means, and what would silently leave ports
    unprotected or every remote refused: a port with no policy and no default, a ban of every
    address. (A server's snapshot can legitimately hold either, so HostState allows them.)"""
    errors = []
    if state.default_policy is None:
        for i, port in enumerate(state.ports):
            if port.policy is None:
                errors.append((f"ports[{i}].policy", f"{port.interface_name} has no policy and there is no "
                               "default_policy: it would be unprotected"))
    for i, ban in enumerate(state.bans):
        if ban.ip_address.endswith("/0"):  # the model spells every ban as a network: a.b.c.d/n
            errors.append((f"bans[{i}].ip_address", f"{ban.ip_address} would ban every "
                           f"IPv{ipaddress.ip_network(ban.ip_address).version} address"))
    return errors


def load_state_file(path: str | Path) -> HostState:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ValidationFailed([(str(path), f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError as exc:
        raise ValidationFailed([(str(path), f"not UTF-8 text: byte {exc.start}")]) from None
    return load_state_text(text, source=str(path))


def normalise_remote(ip: str) -> str:
    """Key under which a remote address is accounted: IPv4 /32, IPv6 /64."""
    addr = ipaddress.ip_address(ip)
    if addr.version == 6:
        return str(ipaddress.ip_network(f"{ip}/64", strict=False).network_address)
    return str(addr)
