"""Mem0's filter language (service/filters.py) against an oracle written apart from it: a table of
Python operators over (present, value) pairs, random nested AND / OR / NOT conditions from
hypothesis, and the exact errors for malformed filters."""

from __future__ import annotations

import operator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from memr1_jax.service.filters import OPERATORS, check, matches, split_filters
from memr1_jax.service.store import Row

KEYS = ("k", "n", "actor_id", "role")
_VALUES = st.one_of(st.integers(-3, 3), st.sampled_from(["a", "B", "ab", "3", ""]), st.booleans())


def _row(meta: dict, actor=None, role=None) -> Row:
    return Row(id="x", memory="m", hash="h", scope={"user_id": "u"}, actor_id=actor, role=role, metadata=meta,
               created_at="t", updated_at=None, embedding=np.zeros(2, np.float32))


def _ordered(f):
    def cmp(have, want):
        try:
            return f(have, want)
        except TypeError:
            return False
    return cmp


ORACLE = {   # (have, want) for a present value; a missing one matches only ne / nin
    "eq": operator.eq, "ne": operator.ne,
    "in": _ordered(lambda h, w: any(h == x for x in w)), "nin": _ordered(lambda h, w: all(h != x for x in w)),
    "gt": _ordered(operator.gt), "gte": _ordered(operator.ge), "lt": _ordered(operator.lt),
    "lte": _ordered(operator.le),
    "contains": lambda h, w: str(w) in str(h), "icontains": lambda h, w: str(w).casefold() in str(h).casefold(),
}


def oracle(fields: dict, cond: dict) -> bool:
    """``fields``: key -> value of a row (absent keys missing)."""
    results = []
    for key, want in cond.items():
        if key == "AND":
            results.append(all(oracle(fields, c) for c in want))
        elif key == "OR":
            results.append(any(oracle(fields, c) for c in want))
        elif key == "NOT":
            results.append(not any(oracle(fields, c) for c in want))
        elif want == "*":
            results.append(key in fields)
        else:
            op, arg = next(iter(want.items())) if isinstance(want, dict) else ("eq", want)
            results.append(ORACLE[op](fields[key], arg) if key in fields else op in ("ne", "nin"))
    return all(results)


def _leaf():
    def one(k, op, value, values, plain):
        if op in ("in", "nin"):
            return {k: {op: values}}
        return {k: value} if plain else {k: {op: value}}
    return st.builds(one, st.sampled_from(KEYS), st.sampled_from(OPERATORS), _VALUES,
                     st.lists(_VALUES, max_size=3), st.booleans()) | \
        st.builds(lambda k: {k: "*"}, st.sampled_from(KEYS))


CONDS = st.recursive(_leaf(), lambda inner: st.one_of(
    st.builds(lambda xs: {"AND": xs}, st.lists(inner, max_size=3)),
    st.builds(lambda xs: {"OR": xs}, st.lists(inner, max_size=3)),
    st.builds(lambda xs: {"NOT": xs}, st.lists(inner, max_size=3)),
    st.builds(lambda a, b: {**a, **b}, inner, inner)), max_leaves=6)


@settings(max_examples=600, deadline=None)
@given(st.dictionaries(st.sampled_from(("k", "n")), _VALUES, max_size=2),
       st.one_of(st.none(), st.sampled_from(["ann", "Bo"])), st.one_of(st.none(), st.sampled_from(["user", "a"])),
       CONDS)
def test_matches_equals_the_oracle(meta, actor, role, cond):
    fields = dict(meta)
    if actor is not None:
        fields["actor_id"] = actor
    if role is not None:
        fields["role"] = role
    check(cond)
    assert matches(_row(meta, actor, role), cond) == oracle(fields, cond), (fields, cond)


def test_hand_cases():
    row = _row({"k": 3, "s": "Hello"}, actor="ann")
    assert matches(row, {"k": 3}) and not matches(row, {"k": 4})
    assert matches(row, {"k": {"ne": 4}}) and not matches(row, {"k": {"ne": 3}})
    assert matches(row, {"k": {"gte": 3}}) and not matches(row, {"k": {"gt": 3}})
    assert matches(row, {"k": {"lte": 3}}) and not matches(row, {"k": {"lt": 3}})
    assert matches(row, {"k": {"gte": 2}}) and matches(row, {"k": {"lte": 4}})   # not substring tests
    assert not matches(row, {"k": {"gte": 4}}) and not matches(row, {"k": {"lte": 2}})
    assert matches(row, {"k": {"in": [1, 3]}}) and matches(row, {"k": {"nin": [1, 2]}})
    assert matches(row, {"s": {"contains": "ell"}}) and not matches(row, {"s": {"contains": "ELL"}})
    assert matches(row, {"s": {"icontains": "ELL"}})
    assert matches(row, {"missing": {"ne": 1}}) and matches(row, {"missing": {"nin": [1]}})
    assert not matches(row, {"missing": {"eq": 1}}) and not matches(row, {"missing": "*"})
    assert matches(row, {"actor_id": "ann", "k": "*"}) and not matches(row, {"role": "*"})
    assert not matches(row, {"s": {"gt": 2}})                     # "Hello" > 2: no match, no error
    assert matches(row, {"OR": [{"k": 4}, {"k": 3}]}) and not matches(row, {"AND": [{"k": 3}, {"k": 4}]})
    assert matches(row, {"NOT": [{"k": 4}]}) and not matches(row, {"NOT": [{"k": 3}]})
    assert matches(row, {}) and matches(row, {"AND": []}) and not matches(row, {"OR": []})


def test_split_takes_the_scope_and_checks_the_rest():
    assert split_filters({"user_id": " u ", "agent_id": "a", "k": 1}, "search") == (
        {"user_id": "u", "agent_id": "a"}, {"k": 1})
    assert split_filters({"run_id": "r"}, "get_all") == ({"run_id": "r"}, {})
    with pytest.raises(ValueError, match=r"^search: filters must contain at least one of user_id, agent_id, "
                                         r"run_id, e.g. filters=\{'user_id': 'alice'\}$"):
        split_filters({"k": 1}, "search")
    with pytest.raises(ValueError, match=r"^search: filters must contain"):
        split_filters(None, "search")
    for bad in ("", "  ", 3):
        with pytest.raises(ValueError, match=r"^get_all: filters\['user_id'\] must be a non-empty string, got "):
            split_filters({"user_id": bad}, "get_all")


@pytest.mark.parametrize("cond, message", [
    ({"AND": {"k": 1}}, r"^filters\['AND'\] must be a list of filter objects$"),
    ({"OR": [1]}, r"^filters\['OR'\] must be a list of filter objects$"),
    ({"NOT": [{"k": {"like": 1}}]}, r"^filters\['k'\]: expected one operator of eq, ne, in, nin, gt, gte, lt, lte, "
                                    r"contains, icontains, got \['like'\]$"),
    ({"k": {"eq": 1, "ne": 2}}, r"^filters\['k'\]: expected one operator of .*, got \['eq', 'ne'\]$"),
    ({"k": {}}, r"^filters\['k'\]: expected one operator of .*, got \[\]$"),
    ({"k": {"nin": "abc"}}, r"^filters\['k'\]: 'nin' takes a list of values, got 'abc'$"),
    ({"OR": [{"k": {"in": 3}}]}, r"^filters\['k'\]: 'in' takes a list of values, got 3$"),
])
def test_malformed_filters_are_named(cond, message):
    with pytest.raises(ValueError, match=message):
        check(cond)
    with pytest.raises(ValueError, match=message):
        split_filters({"user_id": "u", **cond}, "search")
