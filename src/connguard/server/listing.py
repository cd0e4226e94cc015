"""Neutron's collection queries: equality filters, ``fields=``, ``sort_key``/``sort_dir``,
``limit``/``marker`` pagination with ``<collection>_links``. Filters apply to the public
representation, so every field a client can read is a field it can filter on."""

from __future__ import annotations

from typing import Any, Iterable
from urllib.parse import urlencode

from fastapi import Request

from connguard.db.errors import BadRequest

CONTROL = {"fields", "limit", "marker", "sort_key", "sort_dir", "page_reverse"}


def _norm(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _matches(value: Any, wanted: list[str]) -> bool:
    if isinstance(value, list):
        flat = [_norm(v.get("ip_address") if isinstance(v, dict) else v) for v in value]
        return any(w in flat for w in wanted)
    norm = _norm(value)
    return any(norm == (w.lower() if isinstance(value, bool) else w) or (value is None and w.lower() in ("null", "none"))
               for w in wanted)


def _sort_value(value: Any) -> tuple:
    if value is None:
        return (0, "")
    if isinstance(value, (bool, int, float)):
        return (1, float(value), "")
    return (2, 0.0, str(value))


def select_fields(item: dict[str, Any], request: Request) -> dict[str, Any]:
    fields = request.query_params.getlist("fields")
    if not fields:
        return item
    return {k: v for k, v in item.items() if k in fields}


def _href(request: Request, query: list[tuple[str, str]]) -> str:
    return str(request.url.replace(query=urlencode(query)))


def collection(request: Request, name: str, items: Iterable[dict[str, Any]], *, fields: Iterable[str],
               extra_params: Iterable[str] = ()) -> dict[str, Any]:
    """Apply the query of ``request`` to ``items`` (public dicts whose keys are ``fields``)
    and wrap the result in Neutron's envelope ``{name: [...], name_links: [...]}``."""
    items = list(items)
    fields = set(fields)
    params = request.query_params
    filters: dict[str, list[str]] = {}
    for key in params.keys():
        if key in CONTROL or key in extra_params:
            continue
        if key not in fields:
            raise BadRequest(f"Invalid input for {key}: unknown filter")
        filters[key] = params.getlist(key)
    items = [i for i in items if all(_matches(i.get(k), v) for k, v in filters.items())]

    sort_keys = params.getlist("sort_key")
    sort_dirs = params.getlist("sort_dir")
    for d in sort_dirs:
        if d not in ("asc", "desc"):
            raise BadRequest("Invalid input for sort_dir: must be asc or desc")
    for key in sort_keys:
        if key not in fields:
            raise BadRequest(f"Invalid input for sort_key: {key} is not a field")
    for i, key in reversed(list(enumerate(sort_keys))):
        desc = (sort_dirs[i] if i < len(sort_dirs) else "asc") == "desc"
        items.sort(key=lambda it: _sort_value(it.get(key)), reverse=desc)

    marker = params.get("marker")
    if marker is not None:
        ids = [i.get("id") for i in items]
        if marker not in ids:
            raise BadRequest(f"Invalid input for marker: {marker} is not in the collection")
        items = items[ids.index(marker) + 1:]
    links = []
    limit_raw = params.get("limit")
    if limit_raw is not None:
        if not limit_raw.isdigit():
            raise BadRequest("Invalid input for limit: must be a non-negative integer")
        limit = int(limit_raw)
        if limit and len(items) > limit:
            items = items[:limit]
            query = [(k, v) for k, v in params.multi_items() if k != "marker"]
            links.append({"rel": "next", "href": _href(request, query + [("marker", items[-1]["id"])])})
    if marker is not None and items:
        query = [(k, v) for k, v in params.multi_items() if k not in ("marker", "page_reverse")]
        links.append({"rel": "previous",
                      "href": _href(request, query + [("marker", items[0]["id"]), ("page_reverse", "True")])})
    out: dict[str, Any] = {name: [select_fields(i, request) for i in items]}
    if links:
        out[f"{name}_links"] = links
    return out
