"""The public names of each package are pinned: removing or renaming one is a decision."""

import importlib

import pytest

PUBLIC = {
    "connguard.model": ["AllowlistEntry", "Ban", "BruteForceRule", "ConnectionLimitRule", "ConnectionRateLimitRule",
                        "HostState", "PROFILES", "Policy", "Port", "Profile", "RULE_TYPES", "Rule", "Service",
                        "SynFloodRule", "load_state_file", "parse_state"],
    "connguard.compiler": ["COMPILERS", "Chain", "Element", "Hook", "NftSet", "Rule", "Ruleset", "compile_host",
                           "compile_policy"],
    "connguard.nft": ["Applier", "ApplyResult", "Executor", "FakeExecutor", "KernelBan", "NftCli", "NftFailure",
                      "NftLib", "Observation", "make_executor", "observe"],
    "connguard.lab": ["BruteForceAttempt", "BruteForceResult", "Client", "EstablishedConnection", "FloodResult",
                      "FloodSecond", "Hold", "Lab", "LabError", "Server", "SynFloodResult", "VM"],
}


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_exported_names_are_pinned(module):
    mod = importlib.import_module(module)
    assert sorted(mod.__all__) == sorted(PUBLIC[module])
    for name in mod.__all__:
        assert hasattr(mod, name), f"{module}.{name} is exported but missing"


def test_exceptions_module_imports_nothing_internal():
    import ast
    from pathlib import Path

    import connguard.exceptions as exc

    tree = ast.parse(Path(exc.__file__).read_text())
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)] + \
               [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m and m.startswith("connguard")]
