"""Pure compilation of a host's desired state into a ruleset model (``compile_host``)."""

from connguard.compiler.compile import COMPILERS, compile_host, compile_policy
from connguard.compiler.ruleset import Chain, Element, Hook, NftSet, Rule, Ruleset

__all__ = ["COMPILERS", "Chain", "Element", "Hook", "NftSet", "Rule", "Ruleset",
           "compile_host", "compile_policy"]
