"""What may enter the memory store, and how anything already in it is read back.

Python's ``json`` accepts ``NaN``, ``Infinity`` and lone UTF-16 surrogates (``"\\ud800"``), none
of which a JSON response or a UTF-8 file can hold: one such value stored in a memory's metadata
would make every later read of its scope fail. ``check_value`` refuses them on the way in,
naming the field; ``readable`` repairs them on the way out, for rows written before the check.
"""

from __future__ import annotations

import math
import re

MAX_DEPTH = 32   # nesting of metadata / filters; deeper is refused, not a RecursionError later

_SURROGATE = re.compile("[\ud800-\udfff]")


def _has_surrogate(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _shown(field: str) -> str:
    return field.encode("utf-8", "backslashreplace").decode("utf-8")


def check_value(value, field: str) -> None:
    """ValueError naming the field's path when ``value`` is not plain JSON that can be read back:
    a string with a lone surrogate or a NUL, a non-finite number, a key that is not a string, nesting
    deeper than ``MAX_DEPTH``, or a value of another type."""
    stack = [(field, value, 0)]
    while stack:
        where, x, depth = stack.pop()
        if x is None or isinstance(x, (bool, int)):
            continue
        if isinstance(x, float):
            if not math.isfinite(x):
                raise ValueError(f"{_shown(where)}: {x} is not a JSON number (finite numbers only)")
        elif isinstance(x, str):
            if _has_surrogate(x):
                raise ValueError(f"{_shown(where)}: text holds a lone surrogate (not valid Unicode)")
            if "\x00" in x:   # PostgreSQL text cannot hold it: refused on every store alike
                raise ValueError(f"{_shown(where)}: text holds a NUL character")
        elif isinstance(x, (list, tuple, dict)):
            if depth >= MAX_DEPTH:
                raise ValueError(f"{_shown(where)}: nested deeper than {MAX_DEPTH} levels")
            if isinstance(x, dict):
                for k, v in x.items():
                    if not isinstance(k, str) or _has_surrogate(k) or "\x00" in k:
                        raise ValueError(f"{_shown(where)}: key {_shown(repr(k))} is not valid text")
                    stack.append((f"{where}.{k}", v, depth + 1))
            else:
                stack.extend((f"{where}[{i}]", v, depth + 1) for i, v in enumerate(x))
        else:
            raise ValueError(f"{_shown(where)}: a {type(x).__name__} is not a JSON value")


def readable(value):
    """``value`` with lone surrogates replaced by U+FFFD and non-finite numbers by None, so it
    serialises as strict UTF-8 JSON whatever a row holds."""
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value) if _has_surrogate(value) else value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {readable(k) if isinstance(k, str) else k: readable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [readable(v) for v in value]
    return value
