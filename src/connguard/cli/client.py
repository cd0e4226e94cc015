"""The HTTP client of the resource commands (httpx) and their output formats.

Every resource command takes ``--url``/``--token`` (or ``CONNGUARD_URL``/``CONNGUARD_TOKEN``,
or the config file ``connguard up`` writes: see config.py for where and the precedence);
listings take ``-f table|json|yaml|value`` and ``-c COLUMN``. API errors print the server's
NeutronError message on one line and exit 1; usage errors exit 2 (click's convention).
"""

from __future__ import annotations

import functools
import json
import re
import sys
from typing import TYPE_CHECKING, Any, Callable, Iterable

import click

# httpx and yaml are imported where used: a command's --help must not pay for them
# (connguard.cli.main, docs/benchmarks.md "CLI start-up").

if TYPE_CHECKING:
    import httpx

DEFAULT_URL = "http://127.0.0.1:9696"
FORMATS = ("table", "json", "yaml", "value")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


class ApiError(Exception):
    def __init__(self, status: int, type_: str, message: str):
        super().__init__(message)
        self.status, self.type, self.message = status, type_, message


class Client:
    def __init__(self, url: str, token: str | None, *, transport: httpx.BaseTransport | None = None):
        self.base = url.rstrip("/") + "/v2.0/"
        headers = {"X-Auth-Token": token} if token else {}
        import httpx

        self._http = httpx.Client(headers=headers, timeout=30, transport=transport)

    def request(self, method: str, path: str, body: Any = None, *, params: dict[str, Any] | None = None,
                if_match: int | None = None) -> Any:
        import httpx

        headers = {"If-Match": f"revision_number={if_match}"} if if_match is not None else {}
        try:
            r = self._http.request(method, self.base + path.lstrip("/"), json=body, params=params, headers=headers)
        except httpx.HTTPError as exc:
            raise ApiError(0, "ConnectionFailed", f"cannot reach the server at {self.base}: {exc}") from None
        data = None
        if r.content:
            try:
                data = r.json()
            except ValueError:
                data = None
        if r.status_code >= 400:
            err = (data or {}).get("NeutronError") if isinstance(data, dict) else None
            if isinstance(err, dict):
                raise ApiError(r.status_code, err.get("type", "Error"), err.get("message", r.reason_phrase))
            raise ApiError(r.status_code, "HTTPError", f"{r.status_code} {r.reason_phrase}")
        return data

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body)

    def put(self, path: str, body: Any, *, if_match: int | None = None) -> Any:
        return self.request("PUT", path, body, if_match=if_match)

    def delete(self, path: str) -> None:
        self.request("DELETE", path)

    def resolve(self, collection: str, key: str, name_or_id: str) -> str:
        """An id from an id or a unique name."""
        if _UUID.match(name_or_id):
            return name_or_id
        found = self.get(collection, name=name_or_id)[key]
        if len(found) != 1:
            what = "no" if not found else "more than one"
            raise ApiError(404, "NotFound", f"{what} {collection.split('/')[-1]} named {name_or_id!r}")
        return found[0]["id"]


def connection(fn: Callable) -> Callable:
    """Add --url/--token and pass ``client``."""

    @click.option("--url", envvar="CONNGUARD_URL", default=None,
                  help=f"Server URL (env CONNGUARD_URL, else the config file, else {DEFAULT_URL}).")
    @click.option("--token", envvar="CONNGUARD_TOKEN",
                  help="API token (env CONNGUARD_TOKEN, else the config file's when the URL is its URL).")
    @functools.wraps(fn)
    def wrapper(*args: Any, url: str | None, token: str | None, **kwargs: Any) -> Any:
        from connguard.cli import config

        try:
            url, token = config.resolve(url, token, DEFAULT_URL)
        except config.ConfigError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(1)
        try:
            return fn(*args, client=Client(url, token), **kwargs)
        except ApiError as exc:
            click.echo(f"Error: {exc.message}", err=True)
            sys.exit(1)

    return wrapper


def output(fn: Callable) -> Callable:
    """Add -f/--format and -c/--column."""

    @click.option("-f", "--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
    @click.option("-c", "--column", "columns", multiple=True, help="Show only this column (repeatable).")
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(header)]
    line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

    def fmt(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    return "\n".join([line, fmt(header), line, *[fmt(r) for r in rows], line])


def _pick(columns: Iterable[str], available: list[str]) -> list[str]:
    columns = list(columns)
    unknown = [c for c in columns if c not in available]
    if unknown:
        raise click.UsageError(f"no column {unknown[0]!r}; columns are: {', '.join(available)}")
    return columns or available


def emit_list(rows: list[dict[str, Any]], *, default: list[str], fmt: str, columns: Iterable[str]) -> None:
    available = list(dict.fromkeys([*default, *(k for r in rows for k in r)]))
    cols = _pick(columns, available) if columns else default
    data = [{c: r.get(c) for c in cols} for r in rows]
    if fmt == "json":
        click.echo(json.dumps(data, indent=2))
    elif fmt == "yaml":
        import yaml

        click.echo(yaml.safe_dump(data, sort_keys=False), nl=False)
    elif fmt == "value":
        for r in data:
            click.echo(" ".join(cell(r[c]) for c in cols))
    else:
        click.echo(_table(cols, [[cell(r[c]) for c in cols] for r in data]))


def emit_one(obj: dict[str, Any], *, fmt: str, columns: Iterable[str]) -> None:
    cols = _pick(columns, list(obj))
    data = {c: obj[c] for c in cols}
    if fmt == "json":
        click.echo(json.dumps(data, indent=2))
    elif fmt == "yaml":
        import yaml

        click.echo(yaml.safe_dump(data, sort_keys=False), nl=False)
    elif fmt == "value":
        for c in cols:
            click.echo(cell(data[c]))
    else:
        click.echo(_table(["Field", "Value"], [[c, cell(data[c])] for c in cols]))
