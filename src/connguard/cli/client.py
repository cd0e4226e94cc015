"""The HTTP client of the resource commands (httpx).

Every resource command takes ``--url``/``--token`` (or ``CONNGUARD_URL``/``CONNGUARD_TOKEN``,
or the config file ``connguard up`` writes: see config.py for where and the precedence);
output formats are connguard.cli.output's. API errors print the server's NeutronError message
on one line and exit 1, except where the server speaks HTTP (a missing or refused token): those
are said in the CLI's terms. Usage errors exit 2 (click's convention).
"""

from __future__ import annotations

import functools
import re
import sys
from typing import TYPE_CHECKING, Any, Callable

import click

# The output layer, re-exported: resource modules import it from here.
from connguard.cli.output import FORMATS, cell, emit_list, emit_one, lister, output, page_in_memory  # noqa: F401

# httpx and yaml are imported where used: a command's --help must not pay for them
# (connguard.cli.main, docs/benchmarks.md "CLI start-up").

if TYPE_CHECKING:
    import httpx

DEFAULT_URL = "http://127.0.0.1:9696"
NO_TOKEN = ("authentication required: set CONNGUARD_TOKEN or pass --token (`connguard up` writes a config "
            "file with one; `connguard token create --db URL` makes one)")
BAD_TOKEN = "the server refused the token: check CONNGUARD_TOKEN, --token or the config file's token"
# Server messages that name the request body rather than the command line, by the error's
# stable type: the one place where the CLI says them in its own terms.
CLI_TERMS: dict[str, Callable[[str], str]] = {
    "PrefixTooWide": lambda message: message.replace('"force": true', "--force"),
}
_UUID = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


class ApiError(Exception):
    def __init__(self, status: int, type_: str, message: str):
        super().__init__(message)
        self.status, self.type, self.message = status, type_, message


class Client:
    def __init__(self, url: str, token: str | None, *, transport: httpx.BaseTransport | None = None):
        self.base = url.rstrip("/") + "/v2.0/"
        self.has_token = bool(token)
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
        if r.status_code == 401:  # the server speaks HTTP ("send the X-Auth-Token header")
            raise ApiError(401, "Unauthenticated", BAD_TOKEN if self.has_token else NO_TOKEN)
        if r.status_code >= 400:
            err = (data or {}).get("NeutronError") if isinstance(data, dict) else None
            if isinstance(err, dict):
                type_, message = err.get("type", "Error"), err.get("message", r.reason_phrase)
                raise ApiError(r.status_code, type_, CLI_TERMS.get(type_, str)(message))
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

    def resolve(self, collection: str, key: str, name_or_id: str, *, what: str | None = None) -> str:
        """An id from an id or a unique name (osc-lib's find_resource, with its messages)."""
        if _UUID.match(name_or_id):
            return name_or_id
        what = what or collection.split("/")[-1].rstrip("s")
        found = self.get(collection, name=name_or_id)[key]
        if not found:
            raise ApiError(404, "NotFound", f"No {what} with a name or ID of '{name_or_id}' exists.")
        if len(found) > 1:
            raise ApiError(409, "Conflict", f"More than one {what} exists with the name '{name_or_id}'.")
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
