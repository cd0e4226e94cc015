"""API input schemas, built from the model's classes so a field means the same in a state file
and over HTTP: names, types, ranges and defaults come from ``connguard.model``; only API-only
fields (project, sharing, tags, Neutron port attributes) are declared here.

Updates are not separate schemas with everything optional: the stored object is merged with the
request and the result is re-validated through the same create schema.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, create_model, field_validator

from connguard.model.common import Frozen, InterfaceName
from connguard.model.objects import AllowlistEntry, Ban, Policy, Port

ProjectId = Annotated[str, Field(min_length=1, max_length=64)]
Tag = Annotated[str, Field(min_length=1, max_length=60)]
HostName = Annotated[str, Field(min_length=1, max_length=255)]


def _fields(model: type[Frozen], *names: str) -> dict[str, Any]:
    return {n: (model.model_fields[n].annotation, model.model_fields[n]) for n in names}


_CONFIG = ConfigDict(extra="forbid", frozen=True)

PolicyCreate = create_model(
    "PolicyCreate",
    __config__=_CONFIG,
    **_fields(Policy, "name", "description", "enforcement"),
    shared=(bool, False),
    is_default=(bool, False),
    tags=(Annotated[list[Tag], Field(max_length=50)], []),
)
POLICY_MUTABLE = ("name", "description", "enforcement", "shared", "is_default", "tags")

PortCreate = create_model(
    "PortCreate",
    __config__=_CONFIG,
    __validators__={
        # The API's form ({"ip_address": ..., "subnet_id": ...}) and plain strings, as the model.
        "plain_addresses": field_validator("fixed_ips", mode="before")(lambda cls, v: Port._plain_addresses(v)),
    },
    **_fields(Port, "name", "fixed_ips"),
    interface_name=(InterfaceName | None, None),
    binding_host_id=(HostName | None, Field(None, alias="binding:host_id")),
    mac_address=(Annotated[str, Field(pattern=r"^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$")] | None, None),
    device_owner=(Annotated[str, Field(max_length=255)], ""),
    status=(Literal["ACTIVE", "DOWN", "BUILD", "ERROR"], "ACTIVE"),
    qos_policy_id=(Annotated[str, Field(pattern=r"^[0-9a-fA-F-]{36}$")] | None, None),
)
PORT_MUTABLE = ("name", "fixed_ips", "interface_name", "binding:host_id", "mac_address", "device_owner",
                "status", "qos_policy_id")

AllowCreate = create_model(
    "AllowCreate", __config__=_CONFIG, **_fields(AllowlistEntry, "remote_ip_prefix", "description")
)

BanCreate = create_model(
    "BanCreate",
    __config__=_CONFIG,
    **_fields(Ban, "ip_address", "seconds", "reason"),
    port_id=(Annotated[str, Field(pattern=r"^[0-9a-fA-F-]{36}$")] | None, None),
    scope=(Literal["port", "project", "cloud"] | None, None),
)
