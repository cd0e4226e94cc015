"""Neutron's collection queries in SQL: equality filters, ``sort_key``/``sort_dir``,
``limit``/``marker`` pagination (keyset: the page after, or with ``page_reverse`` before, the
marker's position in the sort order).

A resource declares its public fields as ``Col``s (a SQL expression and how its query strings
are read); ``page`` applies a ``ListQuery`` to a select that already carries the caller's
visibility, fetches one page (plus one row, to know whether more follow) and reports the markers
the API turns into ``next``/``previous`` links. ``page_in_memory`` does the same over a few
already-loaded dicts (rule sub-collections and rule types, whose fields are not columns).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterable, Mapping, Sequence

from sqlalchemy import ColumnElement, Select, and_, false, func, not_, or_, select
from sqlalchemy.dialects.postgresql import JSONB, array
from sqlalchemy.orm import Session

from connguard.db.errors import BadRequest

NULLS = ("null", "none", "")


@dataclass(frozen=True)
class ListQuery:
    """A collection query, already parsed from the URL (keys not yet checked)."""

    filters: tuple[tuple[str, tuple[str, ...]], ...] = ()
    sort: tuple[tuple[str, bool], ...] = ()  # (key, descending)
    limit: int | None = None  # None or 0: no limit
    marker: str | None = None
    page_reverse: bool = False


@dataclass
class Page:
    items: list[dict[str, Any]]
    next_marker: str | None = None  # more follow after this id
    previous_marker: str | None = None  # more precede this id
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Col:
    """A public field backed by SQL. ``kind``: str, bool, int, time or list (a JSON list of
    strings: a filter matches when any element equals any value). ``None``: not filterable
    or sortable (JSON objects such as a policy's rules)."""

    expr: ColumnElement[Any] | None
    kind: str = "str"
    nullable: bool = False


Columns = Mapping[str, Col]


def _check_keys(query: ListQuery, fields: Iterable[str], *, filterable: Callable[[str], bool] = lambda _k: True,
                sortable: Callable[[str], bool] = lambda _k: True) -> None:
    fields = set(fields)
    for key, _ in query.filters:
        if key not in fields:
            raise BadRequest(f"Invalid input for {key}: unknown filter")
        if not filterable(key):
            raise BadRequest(f"Invalid input for {key}: this field cannot be filtered on")
    for key, _ in query.sort:
        if key not in fields:
            raise BadRequest(f"Invalid input for sort_key: {key} is not a field")
        if not sortable(key):
            raise BadRequest(f"Invalid input for sort_key: {key} cannot be sorted on")


# --- SQL -------------------------------------------------------------------------------------


def _time(key: str, raw: str) -> datetime:
    try:
        dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"Invalid input for {key}: expected a time such as 2026-01-31T12:00:00Z") from None
    return (dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


def _one_value(key: str, col: Col, raw: str) -> ColumnElement[bool]:
    expr, null = col.expr, raw.lower() in NULLS
    if col.kind == "str":
        return or_(expr == raw, expr.is_(None)) if null and col.nullable else expr == raw
    if null:
        return expr.is_(None) if col.nullable else false()
    if col.kind == "bool":
        if raw.lower() not in ("true", "false"):
            raise BadRequest(f"Invalid input for {key}: expected true or false")
        return expr if raw.lower() == "true" else not_(expr)
    if col.kind == "int":
        try:
            return expr == int(raw)
        except ValueError:
            raise BadRequest(f"Invalid input for {key}: expected an integer") from None
    if col.kind == "time":  # the API shows whole seconds: match the second shown
        start = _time(key, raw)
        return and_(expr >= start, expr < start + timedelta(seconds=1))
    return expr == raw


def _any_element(session: Session, expr: ColumnElement[Any], values: Sequence[str]) -> ColumnElement[bool]:
    if session.get_bind().dialect.name == "postgresql":
        return expr.cast(JSONB).has_any(array(list(values)))
    each = func.json_each(expr).table_valued("value")
    return select(1).select_from(each).where(each.c.value.in_(list(values))).exists()


def _where(session: Session, columns: Columns, query: ListQuery) -> list[ColumnElement[bool]]:
    out = []
    for key, values in query.filters:
        col = columns[key]
        if col.kind == "list":
            out.append(_any_element(session, col.expr, values))
        else:
            out.append(or_(*(_one_value(key, col, v) for v in values)))
    return out


def _after(expr: ColumnElement[Any], value: Any, desc: bool) -> ColumnElement[bool]:
    """Rows strictly after ``value`` in this key's order (NULLs first ascending, last
    descending, as an ascending sort with NULL smallest, reversed)."""
    if not desc:
        return expr.is_not(None) if value is None else expr > value
    return false() if value is None else or_(expr < value, expr.is_(None))


def _equal(expr: ColumnElement[Any], value: Any) -> ColumnElement[bool]:
    return expr.is_(None) if value is None else expr == value


def page(session: Session, stmt: Select[Any], *, columns: Columns, query: ListQuery,
         default_order: Sequence[ColumnElement[Any]],
         present: Callable[[list[Any]], list[dict[str, Any]]]) -> Page:
    """One page of ``stmt``; ``present`` turns the page's rows into public dicts (in one go,
    so it can load what they refer to in one query).

    ``default_order`` ends with the primary key: it breaks ties of the requested sort, so the
    order is total and a marker has one position."""
    _check_keys(query, columns, filterable=lambda k: columns[k].expr is not None,
                sortable=lambda k: columns[k].expr is not None and columns[k].kind != "list")
    stmt = stmt.where(*_where(session, columns, query))
    keys = [(columns[k].expr, desc) for k, desc in query.sort] + [(e, False) for e in default_order]
    if query.marker is not None:
        probe = stmt.with_only_columns(*(e for e, _ in keys)).where(default_order[-1] == query.marker)
        values = session.execute(probe.limit(1)).first()
        if values is None:
            raise BadRequest(f"Invalid input for marker: {query.marker} is not in the collection")
        reverse = query.page_reverse
        terms = []
        for i, (expr, desc) in enumerate(keys):
            earlier = [_equal(e, v) for (e, _), v in zip(keys[:i], values[:i])]
            terms.append(and_(*earlier, _after(expr, values[i], desc != reverse)))
        stmt = stmt.where(or_(*terms))
    else:
        reverse = False
    order = []
    for expr, desc in keys:
        desc = desc != reverse
        order.append(expr.desc().nulls_last() if desc else expr.asc().nulls_first())
    stmt = stmt.order_by(*order)
    limit = query.limit or None
    if limit:
        stmt = stmt.limit(limit + 1)
    rows = list(session.execute(stmt))
    more = limit is not None and len(rows) > limit
    rows = rows[:limit] if limit else rows
    if reverse:
        rows.reverse()
    items = present(rows)
    return _markers(items, query, more=more)


def _markers(items: list[dict[str, Any]], query: ListQuery, *, more: bool) -> Page:
    if not items:
        return Page(items)
    first, last = items[0].get("id"), items[-1].get("id")
    if query.marker is not None and query.page_reverse:
        return Page(items, next_marker=last, previous_marker=first if more else None)
    return Page(items, next_marker=last if more else None,
                previous_marker=first if query.marker is not None else None)


# --- in memory (a few rows) ------------------------------------------------------------------


def _norm(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _matches(value: Any, wanted: Sequence[str]) -> bool:
    if isinstance(value, list):
        flat = [_norm(v.get("ip_address") if isinstance(v, dict) else v) for v in value]
        return any(w in flat for w in wanted)
    norm = _norm(value)
    return any(norm == (w.lower() if isinstance(value, bool) else w) or (value is None and w.lower() in NULLS)
               for w in wanted)


def _sort_value(value: Any) -> tuple[Any, ...]:
    if value is None:
        return (0, 0.0, "")
    if isinstance(value, (bool, int, float)):
        return (1, float(value), "")
    return (2, 0.0, str(value))


def page_in_memory(items: Iterable[dict[str, Any]], *, fields: Iterable[str], query: ListQuery) -> Page:
    """The same query over ``items`` (already in their default order)."""
    items = list(items)
    _check_keys(query, fields)
    items = [i for i in items if all(_matches(i.get(k), v) for k, v in query.filters)]
    for key, desc in reversed(query.sort):
        items.sort(key=lambda it: _sort_value(it.get(key)), reverse=desc)
    more = False
    if query.marker is not None:
        ids = [i.get("id") for i in items]
        if query.marker not in ids:
            raise BadRequest(f"Invalid input for marker: {query.marker} is not in the collection")
        at = ids.index(query.marker)
        if query.page_reverse:
            items = items[:at]
            more = bool(query.limit) and len(items) > query.limit
            items = items[-query.limit:] if query.limit else items
            return _markers(items, query, more=more)
        items = items[at + 1:]
    if query.limit and len(items) > query.limit:
        items, more = items[:query.limit], True
    return _markers(items, query, more=more)


__all__ = ["Col", "Columns", "ListQuery", "Page", "page", "page_in_memory"]
