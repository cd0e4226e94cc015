"""The CLI's output layer (connguard.cli.output): each format's exact text for known objects,
sorting, width fitting and the listing options, as the openstack client prints them."""

from __future__ import annotations

import json

import click
import pytest
import yaml
from click.testing import CliRunner

from connguard.cli.output import FORMATS, Style, emit_list, emit_one, key_values, lister, output, render_list, render_one

ROWS = [{"id": "b", "name": "web", "shared": False, "max_cps": 20, "tags": ["a", "b"], "note": None},
        {"id": "a", "name": 'ssh, "x"', "shared": True, "max_cps": 5, "tags": [], "note": "x"}]
COLS = ["id", "name", "shared", "max_cps", "tags", "note"]

EXPECTED_LIST = {
    "table": (
        "+----+----------+--------+---------+------------+------+\n"
        "| id | name     | shared | max_cps | tags       | note |\n"
        "+----+----------+--------+---------+------------+------+\n"
        "| b  | web      | False  |      20 | [\"a\", \"b\"] |      |\n"
        "| a  | ssh, \"x\" | True   |       5 | []         | x    |\n"
        "+----+----------+--------+---------+------------+------+\n"),
    "csv": ('"id","name","shared","max_cps","tags","note"\n'
            '"b","web","False",20,"[""a"", ""b""]",""\n'
            '"a","ssh, ""x""","True",5,"[]","x"\n'),
    "value": 'b web False 20 ["a", "b"] \na ssh, "x" True 5 [] x\n',
    "yaml": ("- id: b\n  name: web\n  shared: false\n  max_cps: 20\n  tags:\n  - a\n  - b\n  note: null\n"
             "- id: a\n  name: ssh, \"x\"\n  shared: true\n  max_cps: 5\n  tags: []\n  note: x\n"),
}


@pytest.mark.parametrize("fmt", sorted(EXPECTED_LIST))
def test_each_list_format_exact_text(fmt):
    out = render_list(COLS, ROWS, Style(fmt=fmt))
    assert out == EXPECTED_LIST[fmt], f"{fmt}:\n{out}"


def test_json_list_is_the_rows_with_their_types():
    out = render_list(COLS, ROWS, Style(fmt="json"))
    assert json.loads(out) == ROWS and out.startswith('[\n  {\n    "id": "b",'), out


def test_every_format_has_an_expected_text():
    assert set(FORMATS) == set(EXPECTED_LIST) | {"json"}


def test_show_formats_exact_text():
    obj = ROWS[0]
    assert render_one(obj, COLS, Style()) == (
        "+---------+------------+\n"
        "| Field   | Value      |\n"
        "+---------+------------+\n"
        "| id      | b          |\n"
        "| name    | web        |\n"
        "| shared  | False      |\n"
        "| max_cps | 20         |\n"
        "| tags    | [\"a\", \"b\"] |\n"
        "| note    |            |\n"
        "+---------+------------+\n")
    assert render_one(obj, COLS, Style(fmt="value")) == 'b\nweb\nFalse\n20\n["a", "b"]\n\n'
    assert render_one(obj, COLS, Style(fmt="csv")) == ('"id","name","shared","max_cps","tags","note"\n'
                                                       '"b","web","False",20,"[""a"", ""b""]",""\n')
    assert json.loads(render_one(obj, COLS, Style(fmt="json"))) == obj
    assert yaml.safe_load(render_one(obj, COLS, Style(fmt="yaml"))) == obj


def test_csv_quote_styles():
    assert render_list(["id", "max_cps"], ROWS, Style(fmt="csv", quote="minimal")) == "id,max_cps\nb,20\na,5\n"
    assert render_list(["id", "max_cps"], ROWS, Style(fmt="csv", quote="all")) == \
        '"id","max_cps"\n"b","20"\n"a","5"\n'


def test_empty_table_prints_nothing_but_json_prints_a_list():
    assert render_list(COLS, [], Style()) == ""
    assert render_list(COLS, [], Style(fmt="json")) == "[]\n"
    assert render_list(COLS, [], Style(fmt="csv")) == '"id","name","shared","max_cps","tags","note"\n'


def test_human_formatters_change_tables_only():
    human = {"tags": lambda v: ";".join(v) or "-"}
    table = render_list(["id", "tags"], ROWS, Style(), human)
    assert "| b  | a;b  |" in table and "| a  | -    |" in table, table
    assert json.loads(render_list(["id", "tags"], ROWS, Style(fmt="json"), human))[0]["tags"] == ["a", "b"]
    assert render_list(["tags"], ROWS, Style(fmt="value"), human) == '["a", "b"]\n[]\n'
    assert key_values({"max_cps": 20, "scope": "remote_ip"}) == "max_cps=20, scope=remote_ip"


SORTABLE = [{"id": "1", "n": 3, "s": "b"}, {"id": "2", "n": None, "s": "a"}, {"id": "3", "n": 1, "s": "b"},
            {"id": "4", "n": 2, "s": "a"}]


@pytest.mark.parametrize("columns,descending,order", [
    (("n",), False, ["3", "4", "1", "2"]),          # None last
    (("n",), True, ["1", "4", "3", "2"]),           # None last in both directions
    (("s", "n"), False, ["4", "2", "3", "1"]),      # s first, then n (None last within "a")
    (("s", "n"), True, ["1", "3", "4", "2"]),
])
def test_sort_columns(columns, descending, order):
    out = render_list(["id"], SORTABLE, Style(fmt="value", sort_columns=columns, sort_descending=descending))
    assert out.split() == order, f"sort by {columns} desc={descending}: {out.split()}"


LONG = [{"id": "1", "message": "word " * 30}, {"id": "2", "message": "short"}]


@pytest.mark.parametrize("width", [40, 60, 100])
def test_max_width_wraps_cells_to_fit(width):
    out = render_list(["id", "message"], LONG, Style(max_width=width))
    widest = max(len(line) for line in out.splitlines())
    assert widest <= width, f"--max-width {width}: a line of {widest} characters\n{out}"
    assert "".join(out.split()).count("word") == 30, "wrapping lost text"
    unfit = render_list(["id", "message"], LONG, Style())
    assert max(len(line) for line in unfit.splitlines()) > 150, "without a width the table is not wrapped"


def test_fit_width_uses_the_terminal_width(monkeypatch):
    monkeypatch.setenv("COLUMNS", "50")
    out = render_list(["id", "message"], LONG, Style(fit_width=True))
    assert max(len(line) for line in out.splitlines()) <= 50, out
    monkeypatch.setenv("COLUMNS", "50")
    out = render_list(["id", "message"], LONG, Style())  # not a terminal, no --fit-width: as is
    assert max(len(line) for line in out.splitlines()) > 150


@click.command()
@lister
def _listing(fmt, columns, page):
    """A listing."""
    click.echo(json.dumps(page))
    emit_list(SORTABLE, default=["id", "n"], long=["s"], fmt=fmt, columns=columns)


@click.command()
@output
def _show(fmt, columns):
    """A show."""
    emit_one(LONG[0], fmt=fmt, columns=columns)


def _run(command, *args):
    return CliRunner().invoke(command, list(args), catch_exceptions=False)


def test_listing_options_reach_the_output():
    out = _run(_listing, "-f", "value", "--sort-column", "n", "--sort-descending", "--long", "--limit", "2",
               "--marker", "x")
    assert out.exit_code == 0, out.output
    page, *rows = out.output.splitlines()
    assert json.loads(page) == {"limit": 2, "marker": "x"}
    assert rows == ["1 3 b", "4 2 a", "3 1 b", "2  a"], rows
    plain = _run(_listing, "-f", "csv")
    assert plain.output.splitlines()[1:] == ['"id","n"', '"1",3', '"2",""', '"3",1', '"4",2'], plain.output
    assert json.loads(plain.output.splitlines()[0]) == {}


def test_listing_usage_errors_name_the_column():
    bad = _run(_listing, "--sort-column", "nope")
    assert bad.exit_code == 2 and "cannot sort on 'nope'; columns are: id, n, s" in bad.output, bad.output
    bad = _run(_listing, "-c", "nope")
    assert bad.exit_code == 2 and "no column 'nope'; columns are: id, n, s" in bad.output, bad.output
    assert _run(_listing, "--limit", "0").exit_code == 2


@pytest.mark.parametrize("args,env", [(["--max-width", "40"], {}), ([], {"CLIFF_MAX_TERM_WIDTH": "40"}),
                                      (["--fit-width"], {"COLUMNS": "40"})])
def test_show_takes_the_width_options(monkeypatch, args, env):
    assert max(len(line) for line in _run(_show).output.splitlines()) > 150, "the baseline is not wide"
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    out = _run(_show, *args)
    widest = max(len(line) for line in out.output.splitlines())
    assert out.exit_code == 0 and widest <= 40, f"{args} {env}: {widest} characters\n{out.output}"
