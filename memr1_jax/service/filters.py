"""Mem0's search / get_all filters: the scope ids, then metadata conditions.

``{"user_id": "u1"}`` selects a scope (at least one of user_id / agent_id / run_id is required,
as in Mem0 2.x). Other keys match a memory's promoted fields (actor_id, role) or its metadata:
a plain value is equality; a dict is one operator of eq, ne, in, nin (these two take a list), gt,
gte, lt, lte, contains, icontains; ``"*"`` matches any value present; ``AND`` / ``OR`` / ``NOT`` take lists of
filters. An unknown operator is an error naming it, not a silent miss.
"""

from __future__ import annotations

from typing import Any

from memr1_jax.service.store import SCOPE_KEYS, Row

OPERATORS = ("eq", "ne", "in", "nin", "gt", "gte", "lt", "lte", "contains", "icontains")
_MISSING = object()


def split_filters(filters: dict | None, method: str) -> tuple[dict, dict]:
    """(scope ids, the remaining conditions); ValueError without any scope id."""
    filters = dict(filters or {})
    scope = {}
    for k in SCOPE_KEYS:
        v = filters.pop(k, None)
        if v is not None:
            if not isinstance(v, str) or not v.strip():
                raise ValueError(f"{method}: filters[{k!r}] must be a non-empty string, got {v!r}")
            scope[k] = v.strip()
    if not scope:
        raise ValueError(f"{method}: filters must contain at least one of user_id, agent_id, run_id, "
                         "e.g. filters={'user_id': 'alice'}")
    check(filters)
    return scope, filters


def check(cond: dict) -> None:
    for key, want in cond.items():
        if key in ("AND", "OR", "NOT"):
            if not isinstance(want, list) or not all(isinstance(c, dict) for c in want):
                raise ValueError(f"filters[{key!r}] must be a list of filter objects")
            for c in want:
                check(c)
        elif isinstance(want, dict):
            if len(want) != 1 or next(iter(want)) not in OPERATORS:
                raise ValueError(f"filters[{key!r}]: expected one operator of {', '.join(OPERATORS)}, "
                                 f"got {sorted(want)}")
            (op, arg), = want.items()
            if op in ("in", "nin") and not isinstance(arg, list):   # a string would test substrings
                raise ValueError(f"filters[{key!r}]: {op!r} takes a list of values, got {arg!r}")


def _value(row: Row, key: str) -> Any:
    if key in ("actor_id", "role"):
        v = getattr(row, key)
        return _MISSING if v is None else v
    return row.metadata.get(key, _MISSING)


def _compare(op: str, have: Any, want: Any) -> bool:
    if have is _MISSING:
        return op in ("ne", "nin")
    try:
        if op == "eq":
            return have == want
        if op == "ne":
            return have != want
        if op == "in":
            return have in want
        if op == "nin":
            return have not in want
        if op == "gt":
            return have > want
        if op == "gte":
            return have >= want
        if op == "lt":
            return have < want
        if op == "lte":
            return have <= want
        if op == "contains":
            return str(want) in str(have)
        return str(want).lower() in str(have).lower()   # icontains
    except TypeError:   # e.g. "3" > 2: no match rather than a server error
        return False


def matches(row: Row, cond: dict) -> bool:
    for key, want in cond.items():
        if key == "AND":
            ok = all(matches(row, c) for c in want)
        elif key == "OR":
            ok = any(matches(row, c) for c in want)
        elif key == "NOT":
            ok = not any(matches(row, c) for c in want)
        elif want == "*":
            ok = _value(row, key) is not _MISSING
        elif isinstance(want, dict):
            (op, arg), = want.items()
            ok = _compare(op, _value(row, key), arg)
        else:
            ok = _compare("eq", _value(row, key), want)
        if not ok:
            return False
    return True
