"""Pure compilation of a host's desired state into a ruleset model (``compile_host``).

The names are loaded on first use (PEP 562): ``connguard.compiler.ruleset`` (the kernel object
model, which the nft backend reads) must not pull in the rule compilers and the validation model
behind them, so that ``connguard status`` reads the kernel without importing pydantic.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "COMPILERS": "connguard.compiler.compile", "compile_host": "connguard.compiler.compile",
    "compile_policy": "connguard.compiler.compile",
    "Chain": "connguard.compiler.ruleset", "Element": "connguard.compiler.ruleset",
    "Hook": "connguard.compiler.ruleset", "NftSet": "connguard.compiler.ruleset",
    "Rule": "connguard.compiler.ruleset", "Ruleset": "connguard.compiler.ruleset",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
