"""Rule-type discovery: each type's supported parameters, derived from the model classes'
field constraints (``range`` from ge/le, ``choices`` from Literal and bool). No database."""

from __future__ import annotations

import types
import typing
from typing import Any

import annotated_types
from pydantic.fields import FieldInfo

from connguard.db.errors import NotFound
from connguard.model.rules import RULE_TYPES

DRIVER = "connguard"


def rule_class(rule_type: str) -> type:
    try:
        return RULE_TYPES[rule_type]
    except KeyError:
        raise NotFound(f"QoS rule type {rule_type} could not be found", type="QosRuleTypeNotFound") from None


def flatten_annotation(annotation: Any) -> tuple[list[Any], list[Any]]:
    """(base types, constraint metadata) of an annotation, through Optional/Annotated."""
    bases: list[Any] = []
    meta: list[Any] = []
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        args = typing.get_args(annotation)
        b, m = flatten_annotation(args[0])
        bases += b
        meta += m
        for extra in args[1:]:
            meta += extra.metadata if isinstance(extra, FieldInfo) else [extra]
    elif origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if arg is not type(None):
                b, m = flatten_annotation(arg)
                bases += b
                meta += m
    else:
        bases.append(annotation)
    return bases, meta


def _parameter(name: str, field: FieldInfo) -> dict[str, Any] | None:
    bases, meta = flatten_annotation(field.annotation)
    meta += list(field.metadata)
    literals = [v for b in bases if typing.get_origin(b) is typing.Literal for v in typing.get_args(b)]
    if literals:
        return {"parameter_name": name, "parameter_type": "choices", "parameter_values": literals}
    if bool in bases:
        return {"parameter_name": name, "parameter_type": "choices", "parameter_values": [True, False]}
    start = next((m.ge for m in meta if isinstance(m, annotated_types.Ge)), None)
    end = next((m.le for m in meta if isinstance(m, annotated_types.Le)), None)
    if start is not None or end is not None:
        return {"parameter_name": name, "parameter_type": "range",
                "parameter_values": {"start": start, "end": end}}
    return None


def rule_type_public(rule_type: str, *, detail: bool) -> dict[str, Any]:
    cls = rule_class(rule_type)
    if not detail:
        return {"type": rule_type}
    params = [p for n, f in cls.model_fields.items() if n != "type" and (p := _parameter(n, f))]
    return {"type": rule_type, "drivers": [{"name": DRIVER, "supported_parameters": params}]}


def list_rule_types() -> list[dict[str, Any]]:
    return [rule_type_public(t, detail=False) for t in RULE_TYPES]
