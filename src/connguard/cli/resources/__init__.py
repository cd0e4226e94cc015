"""Resource commands (``policy``, ``rule``, ``rule-type``, ``port``, ``ban``, ``allow``,
``event``, ``agent``): thin wrappers over the REST API, one module per command group.

The names below are imported on first use (PEP 562), so that importing one command's module
(``connguard.cli.resources.ban``) does not import the others: see connguard.cli.main."""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {"agent": "agent", "allow": "allow", "ban": "ban", "event": "event", "policy": "policy", "port": "port",
          "rule": "rule", "rule_type": "rule"}

# ``agent`` is not in COMMANDS: the name belongs to the agent daemon (``connguard agent``);
# its ``list`` subcommand is ``agent.commands["list"]``, to be attached to the daemon's group.
_COMMANDS = ("policy", "rule", "rule_type", "port", "ban", "allow", "event")

__all__ = ["COMMANDS", "agent", "allow", "ban", "event", "policy", "port", "rule", "rule_type"]


def __getattr__(name: str) -> Any:
    if name == "COMMANDS":
        return tuple(__getattr__(n) for n in _COMMANDS)
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
