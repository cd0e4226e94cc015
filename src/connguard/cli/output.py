"""Output formats of every listing and show, as the openstack client (cliff) prints them.

``-f table|csv|json|yaml|value`` and ``-c COLUMN`` everywhere; tables take ``--max-width N``
and ``--fit-width`` (cliff's: shrink columns, wrapping their text, so that the table fits N
characters or the terminal; also ``CLIFF_MAX_TERM_WIDTH``/``CLIFF_FIT_WIDTH`` as openstack
users already set them); listings add ``--sort-column C`` (repeatable) with
``--sort-ascending``/``--sort-descending``, ``--long``, ``--limit N`` and ``--marker ID``.

Tables are drawn by prettytable (what cliff's own table formatter uses), imported only when a
table is printed: a command's ``--help`` must not pay for it (connguard.cli.main). Sorting is
cliff's too: the rows fetched are sorted on the client, ``None`` last.

A resource module declares its columns as data and calls ``emit_list``/``emit_one``; adding a
column is adding a name to its ``COLUMNS`` (shown by default) or ``LONG_COLUMNS`` (with
``--long``); any other key of the objects is available with ``-c``.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import sys
from typing import Any, Callable, Iterable, NamedTuple, Sequence

import click

FORMATS = ("table", "csv", "json", "yaml", "value")
_META = "connguard.output"


# Imported where used, like prettytable: csv, io and yaml (and a NamedTuple, not a dataclass,
# whose module imports inspect): `--help` of a listing pays for none of them.


class Style(NamedTuple):
    """How to print, from the command line (the formatting options of one invocation)."""

    fmt: str = "table"
    max_width: int = 0
    fit_width: bool = False
    sort_columns: tuple[str, ...] = ()
    sort_descending: bool = False
    long: bool = False
    quote: str = "nonnumeric"


def cell(value: Any) -> str:
    """A value as one table/value/csv cell: lists and objects as compact JSON."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


# -- renderers: pure, (columns, rows, style) -> text ----------------------------------------


def _terminal_width() -> int:
    # $COLUMNS first, then the terminal's own size (0 when stdout is not a terminal)
    return shutil.get_terminal_size((0, 0)).columns


def _fit(table: Any, max_width: int, fit_width: bool, min_width: int) -> None:
    """cliff's TableFormatter._assign_max_widths: columns wider than an equal share of the width
    are shrunk (their text wraps); the last of them gets what is left, at least min_width."""
    width = max_width if max_width > 0 else (_terminal_width() if fit_width or sys.stdout.isatty() else 0)
    if width <= 0 or not table.field_names:
        return
    first = table.get_string().splitlines()[0]
    if len(first) <= width:
        return
    names = list(table.field_names)
    usable = max(0, width - 1 - 3 * len(names))
    share = usable // len(names)
    widths = dict(zip(names, (max(0, len(p) - 2) for p in first.split("+")[1:-1])))
    shrink = [n for n in names if widths[n] > share]
    if not shrink:
        return
    remaining = usable - sum(widths[n] for n in names if widths[n] <= share)
    each = remaining // len(shrink)
    for name in shrink[:-1]:
        table.max_width[name] = max(min_width, each)
        remaining -= each
    table.max_width[shrink[-1]] = max(min_width, remaining)


def _prettytable(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Any:
    import prettytable  # noqa: PLC0415 (lazy: see the module docstring)

    table = prettytable.PrettyTable(list(header))
    table.align = "l"
    rows = list(rows)
    if rows:  # numbers right-aligned, as cliff does, judged by the first row
        for name, value in zip(header, rows[0]):
            if _number(value):
                table.align[name] = "r"
    for row in rows:
        table.add_row([cell(v).replace("\r\n", "\n").replace("\r", " ") if not _number(v) else v for v in row])
    return table


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def table(header: Sequence[str], rows: Iterable[Sequence[Any]], *, max_width: int = 0, fit_width: bool = False,
          min_width: int = 8) -> str:
    """A bordered table (prettytable), shrunk to ``max_width`` characters when given."""
    t = _prettytable(header, rows)
    _fit(t, max_width, fit_width, min_width)
    return t.get_string()


def _sorted(rows: list[dict[str, Any]], style: Style) -> list[dict[str, Any]]:
    # One stable sort per column, last named first, so that the first named is the primary key;
    # rows without the value go last in either direction.
    for column in reversed(style.sort_columns):
        present = [r for r in rows if r.get(column) is not None]
        rows = sorted(present, key=lambda r: _sort_key(r[column]), reverse=style.sort_descending) + \
            [r for r in rows if r.get(column) is None]
    return rows


def _sort_key(value: Any) -> Any:
    if _number(value):
        return (0, value, "")
    return (1, 0, cell(value))


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]], quote: str = "nonnumeric") -> str:
    import csv  # noqa: PLC0415
    import io  # noqa: PLC0415

    out = io.StringIO()
    quoting = {"all": csv.QUOTE_ALL, "minimal": csv.QUOTE_MINIMAL, "none": csv.QUOTE_NONE,
               "nonnumeric": csv.QUOTE_NONNUMERIC}[quote]
    writer = csv.writer(out, quoting=quoting, lineterminator="\n", escapechar="\\")
    writer.writerow(header)
    for row in rows:
        writer.writerow([v if _number(v) else cell(v) for v in row])
    return out.getvalue()


def _yaml(data: Any) -> str:
    import yaml  # noqa: PLC0415

    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False)


Human = dict[str, Callable[[Any], str]]


def render_list(columns: Sequence[str], rows: list[dict[str, Any]], style: Style, human: Human | None = None) -> str:
    """The text of a listing (with a final newline unless empty). ``human`` formats a column's
    values for tables only (cliff's FormattableColumn.human_readable); every other format prints
    the value itself."""
    rows = _sorted(rows, style)
    values = [[r.get(c) for c in columns] for r in rows]
    if style.fmt == "json":
        return json.dumps([dict(zip(columns, v)) for v in values], indent=2) + "\n"
    if style.fmt == "yaml":
        return _yaml([dict(zip(columns, v)) for v in values])
    if style.fmt == "csv":
        return csv_text(columns, values, style.quote)
    if style.fmt == "value":
        return "".join(" ".join(cell(x) for x in v) + "\n" for v in values)
    if not rows:  # cliff prints nothing for an empty table (no --print-empty here)
        return ""
    human = human or {}
    values = [[human[c](v) if c in human and v is not None else v for c, v in zip(columns, row)] for row in values]
    return table(columns, values, max_width=style.max_width, fit_width=style.fit_width) + "\n"


def render_one(obj: dict[str, Any], columns: Sequence[str], style: Style, human: Human | None = None) -> str:
    """The text of one object, as Field/Value rows in a table."""
    if style.fmt == "json":
        return json.dumps({c: obj.get(c) for c in columns}, indent=2) + "\n"
    if style.fmt == "yaml":
        return _yaml({c: obj.get(c) for c in columns})
    if style.fmt == "csv":
        return csv_text(columns, [[obj.get(c) for c in columns]], style.quote)
    if style.fmt == "value":
        return "".join(cell(obj.get(c)) + "\n" for c in columns)
    human = human or {}
    shown = {c: human[c](obj[c]) if c in human and obj.get(c) is not None else obj.get(c) for c in columns}
    return table(["Field", "Value"], [[c, cell(shown[c])] for c in columns], max_width=style.max_width,
                 fit_width=style.fit_width, min_width=16) + "\n"


# -- click: options and the emitters the commands call ---------------------------------------


def _pick(columns: Iterable[str], available: list[str]) -> list[str]:
    columns = list(dict.fromkeys(columns))  # -c id -c id: one column (table headers are unique)
    unknown = [c for c in columns if c not in available]
    if unknown:
        raise click.UsageError(f"no column {unknown[0]!r}; columns are: {', '.join(available)}")
    return columns or available


def current_style(fmt: str) -> Style:
    ctx = click.get_current_context(silent=True)
    meta = dict(ctx.meta.get(_META, {})) if ctx is not None else {}
    meta["fmt"] = fmt
    return Style(**meta)


def emit_list(rows: list[dict[str, Any]], *, default: Sequence[str], fmt: str, columns: Iterable[str],
              long: Sequence[str] = (), human: Human | None = None) -> None:
    """Print ``rows``: the ``default`` columns (and ``long`` ones with --long), or those of -c."""
    style = current_style(fmt)
    shown = [*default, *(long if style.long else ())]
    available = list(dict.fromkeys([*default, *long, *(k for r in rows for k in r)]))
    cols = _pick(columns, available) if columns else shown
    unknown = [c for c in style.sort_columns if c not in available]
    if unknown:
        raise click.UsageError(f"cannot sort on {unknown[0]!r}; columns are: {', '.join(available)}")
    click.echo(render_list(cols, rows, style, human), nl=False)


def emit_one(obj: dict[str, Any], *, fmt: str, columns: Iterable[str], human: Human | None = None) -> None:
    click.echo(render_one(obj, _pick(columns, list(obj)), current_style(fmt), human), nl=False)


def key_values(value: Any) -> str:
    """A mapping as ``key=value, ...`` (osc-lib's format_dict), for tables."""
    if not isinstance(value, dict):
        return cell(value)
    return ", ".join(f"{k}={cell(v)}" for k, v in value.items())


def _store(key: str) -> Callable[[click.Context, click.Parameter, Any], Any]:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> Any:
        ctx.meta.setdefault(_META, {})[key] = value
        return value

    return callback


def _env_int(name: str) -> int:
    try:
        return int(os.environ.get(name, "0") or 0)
    except ValueError:
        return 0


def _format_options(fn: Callable) -> Callable:
    opts = [
        click.option("-f", "--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True,
                     help="Output format."),
        click.option("-c", "--column", "columns", multiple=True, metavar="COLUMN",
                     help="Show only this column (repeatable; any field of the objects)."),
        click.option("--max-width", type=int, default=lambda: _env_int("CLIFF_MAX_TERM_WIDTH"), metavar="N",
                     expose_value=False, callback=_store("max_width"),
                     help="table: shrink the table to N characters, wrapping cells (<1: no limit; env "
                          "CLIFF_MAX_TERM_WIDTH)."),
        click.option("--fit-width", is_flag=True, default=lambda: bool(_env_int("CLIFF_FIT_WIDTH")),
                     expose_value=False, callback=_store("fit_width"),
                     help="table: fit the table to the terminal's width (implied on a terminal and by "
                          "--max-width; env CLIFF_FIT_WIDTH=1)."),
        click.option("--quote", type=click.Choice(["all", "minimal", "none", "nonnumeric"]), default="nonnumeric",
                     show_default=True, expose_value=False, callback=_store("quote"),
                     help="csv: which cells to quote."),
    ]
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def output(fn: Callable) -> Callable:
    """Add the format options (-f, -c, --max-width, --fit-width, --quote); passes ``fmt`` and
    ``columns``."""

    @_format_options
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper


def lister(fn: Callable) -> Callable:
    """``output`` plus what every listing takes: --long, --sort-column, --sort-ascending/
    --sort-descending (client side, like cliff) and --limit/--marker, passed as ``page``
    (query parameters for the API: ``client.get(path, **page)``)."""

    @_format_options
    @click.option("--long", is_flag=True, expose_value=False, callback=_store("long"),
                  help="Show more columns (for rules: each rule's parameters).")
    @click.option("--sort-column", "sort_columns", multiple=True, metavar="COLUMN", expose_value=False,
                  callback=_store("sort_columns"),
                  help="Sort the rows by this column (repeatable: the first is the primary key).")
    @click.option("--sort-ascending/--sort-descending", "sort_ascending", default=True, expose_value=False,
                  callback=lambda ctx, p, v: _store("sort_descending")(ctx, p, not v),
                  help="Direction of --sort-column (default ascending).")
    @click.option("--limit", type=click.IntRange(min=1), metavar="N",
                  help="At most N rows (one page of the API's; continue with --marker).")
    @click.option("--marker", metavar="ID", help="Start after the row with this id (the last of a previous page).")
    @functools.wraps(fn)
    def wrapper(*args: Any, limit: int | None, marker: str | None, **kwargs: Any) -> Any:
        page = {k: v for k, v in (("limit", limit), ("marker", marker)) if v is not None}
        return fn(*args, page=page, **kwargs)

    return wrapper


def page_in_memory(rows: list[dict[str, Any]], page: dict[str, Any]) -> list[dict[str, Any]]:
    """--limit/--marker over rows the API does not page (a policy's rules of every type), by
    id as the server orders them."""
    rows = sorted(rows, key=lambda r: str(r.get("id")))
    if "marker" in page:
        ids = [str(r.get("id")) for r in rows]
        if page["marker"] not in ids:
            raise click.UsageError(f"--marker {page['marker']}: no such row")
        rows = rows[ids.index(page["marker"]) + 1:]
    if "limit" in page:
        rows = rows[: page["limit"]]
    return rows
