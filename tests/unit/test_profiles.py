"""docs/profiles.md documents every brute-force profile, and its summary table states the same
ports and defaults as connguard.model.profiles."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from connguard.model.profiles import PROFILES

DOC = Path(__file__).resolve().parents[2] / "docs" / "profiles.md"
PORT = re.compile(r"\b(tcp|udp|sctp)/(\d+)(?:-(\d+))?\b")


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _summary_table(text: str) -> dict[str, dict[str, str]]:
    """The first markdown table whose header names ``profile`` and ``max_attempts``, as
    {profile: {column: cell}}."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if not line.lstrip().startswith("|"):
            continue
        header = [c.lower() for c in _cells(line)]
        if "profile" not in header or "max_attempts" not in header:
            continue
        assert i + 1 < len(lines) and set(lines[i + 1].replace("|", "").strip()) <= set("-: "), \
            "summary table header is not followed by a separator row"
        rows: dict[str, dict[str, str]] = {}
        for row in lines[i + 2:]:
            if not row.lstrip().startswith("|"):
                break
            cells = _cells(row)
            assert len(cells) == len(header), f"row has {len(cells)} cells, header {len(header)}: {row}"
            name = cells[header.index("profile")].strip("`*")
            assert name not in rows, f"profile {name} appears twice in the summary table"
            rows[name] = dict(zip(header, cells))
        return rows
    raise AssertionError("docs/profiles.md has no summary table with 'profile' and 'max_attempts'")


def _headings(text: str) -> list[str]:
    return [line.lstrip("#").strip() for line in text.splitlines() if re.match(r"#{2,6}\s", line)]


def _ports(cell: str) -> set[tuple[str, int, int]]:
    return {(proto, int(lo), int(hi or lo)) for proto, lo, hi in PORT.findall(cell)}


def _int(cell: str) -> int:
    assert re.fullmatch(r"\d+", cell), f"expected a plain integer, got {cell!r}"
    return int(cell)


@pytest.fixture(scope="module")
def text() -> str:
    return DOC.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def table(text: str) -> dict[str, dict[str, str]]:
    return _summary_table(text)


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_profile_has_a_section(text, name):
    assert any(re.search(rf"\b{re.escape(name)}\b", h) for h in _headings(text)), \
        f"docs/profiles.md has no section heading for profile {name}"


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_summary_row_matches_code(table, name):
    assert name in table, f"summary table has no row for profile {name}"
    row, prof = table[name], PROFILES[name]
    assert _ports(row["ports"]) == {(s.protocol, s.port_min, s.port_max) for s in prof.services}
    assert _int(row["max_attempts"]) == prof.max_attempts
    assert _int(row["window"]) == prof.window
    assert _int(row["ban_seconds"]) == prof.ban_seconds
    assert row.get("guesses per connection"), "the guesses-per-connection column is empty"


def test_summary_table_names_only_known_profiles(table):
    assert set(table) == set(PROFILES)
