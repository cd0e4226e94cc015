"""How a stored QoS rule is shown: both the policy service (a policy lists its rules) and the
rule service use it, so that ``rules`` may depend on ``policies`` and not the other way round
(the import graph of this package has no cycle: pyproject.toml, import-linter contracts)."""

from __future__ import annotations

from typing import Any

from connguard.db.models import QosRule
from connguard.db.services.common import iso
from connguard.model.rules import RULE_TYPES


def _validated(row: QosRule) -> Any:
    return RULE_TYPES[row.type].model_validate(row.params)


def rule_public(row: QosRule) -> dict[str, Any]:
    out = {"id": row.id, **_validated(row).model_dump(mode="json")}
    out.update(qos_policy_id=row.policy_id, revision_number=row.revision_number,
               created_at=iso(row.created_at), updated_at=iso(row.updated_at))
    return out
