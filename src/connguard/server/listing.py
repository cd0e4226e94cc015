"""Neutron's collection queries over HTTP: the URL's filters, ``fields=``,
``sort_key``/``sort_dir`` and ``limit``/``marker``/``page_reverse`` become a
``connguard.db.services.listing.ListQuery`` (the service layer runs it in SQL), and a
``Page`` becomes Neutron's envelope ``{name: [...], name_links: [{"rel": "next"|"previous"}]}``."""

from __future__ import annotations

from typing import Annotated, Any, Iterable
from urllib.parse import urlencode

from fastapi import Depends, Request
from fastapi.responses import JSONResponse

from connguard.db.errors import BadRequest
from connguard.db.services.listing import ListQuery, Page, page_in_memory

CONTROL = {"fields", "limit", "marker", "sort_key", "sort_dir", "page_reverse"}
# Query parameters of particular collections that are not filters (Neutron's rule types).
NOT_FILTERS = {"all_rules", "all_supported"}


def list_query(request: Request) -> ListQuery:
    params = request.query_params
    filters = tuple((key, tuple(params.getlist(key))) for key in dict.fromkeys(params.keys())
                    if key not in CONTROL and key not in NOT_FILTERS)
    dirs = params.getlist("sort_dir")
    for d in dirs:
        if d not in ("asc", "desc"):
            raise BadRequest("Invalid input for sort_dir: must be asc or desc")
    sort = tuple((key, (dirs[i] if i < len(dirs) else "asc") == "desc")
                 for i, key in enumerate(params.getlist("sort_key")))
    limit_raw = params.get("limit")
    if limit_raw is not None and not limit_raw.isdigit():
        raise BadRequest("Invalid input for limit: must be a non-negative integer")
    return ListQuery(filters=filters, sort=sort, limit=int(limit_raw) if limit_raw else None,
                     marker=params.get("marker"),
                     page_reverse=params.get("page_reverse", "").lower() in ("true", "1", "yes"))


def select_fields(item: dict[str, Any], request: Request) -> dict[str, Any]:
    fields = request.query_params.getlist("fields")
    if not fields:
        return item
    return {k: v for k, v in item.items() if k in fields}


def _href(request: Request, marker: str, *, reverse: bool) -> str:
    query = [(k, v) for k, v in request.query_params.multi_items() if k not in ("marker", "page_reverse")]
    query.append(("marker", marker))
    if reverse:
        query.append(("page_reverse", "True"))
    return str(request.url.replace(query=urlencode(query)))


def envelope(request: Request, name: str, page: Page) -> JSONResponse:
    """The JSON response itself: the items are plain JSON values already, and FastAPI's
    generic encoder would cost as much again as building the page."""
    out: dict[str, Any] = {name: [select_fields(i, request) for i in page.items]}
    links = []
    if page.next_marker is not None:
        links.append({"rel": "next", "href": _href(request, page.next_marker, reverse=False)})
    if page.previous_marker is not None:
        links.append({"rel": "previous", "href": _href(request, page.previous_marker, reverse=True)})
    if links:
        out[f"{name}_links"] = links
    return JSONResponse(out)


def in_memory(request: Request, name: str, items: Iterable[dict[str, Any]], *, fields: Iterable[str]) -> JSONResponse:
    """For small collections whose fields are not columns (rule types, tokens)."""
    return envelope(request, name, page_in_memory(items, fields=fields, query=list_query(request)))


QueryDep = Annotated[ListQuery, Depends(list_query)]
