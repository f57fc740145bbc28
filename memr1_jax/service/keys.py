"""API keys bound to scopes: who may read or write which user_id / agent_id / run_id.

``MEMR1_API_KEYS=FILE`` names a JSON file of keys, stored as SHA-256 hashes::

    {"keys": [
      {"name": "alice-app", "sha256": "<hash_key('...')>", "user_id": ["alice"], "write": true},
      {"name": "support", "sha256": "...", "user_id": ["team-*"], "write": false}
    ]}

A constrained field (``user_id`` / ``agent_id`` / ``run_id``, each a list of exact values or
prefixes ending in ``*``) must be named by every request of that key with an allowed value; the
fields a key does not constrain are free. ``MEMR1_API_KEY`` alone stays one key for everything.
Make a hash with ``python -m memr1_jax.service.keys KEY``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import pathlib
import sys

from memr1_jax.service.store import SCOPE_KEYS


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclasses.dataclass(frozen=True)
class Grant:
    name: str
    scopes: dict          # field -> tuple of allowed values ("x" exact, "x*" prefix); absent: any
    write: bool = True

    @property
    def everything(self) -> bool:
        return not self.scopes

    def allows(self, scope: dict) -> bool:
        """Whether a request naming ``scope`` (its user_id / agent_id / run_id) is inside this key's."""
        for field, patterns in self.scopes.items():
            value = scope.get(field)
            if not isinstance(value, str) or not any(
                    value.startswith(p[:-1]) if p.endswith("*") else value == p for p in patterns):
                return False
        return True

    def refusal(self, scope: dict) -> str:
        outside = [f"{f}={scope.get(f)!r}" for f in self.scopes if not Grant(self.name, {f: self.scopes[f]}).allows(scope)]
        return f"key {self.name!r} may not use {', '.join(outside)} (it is bound to " + ", ".join(
            f"{f} in {list(p)}" for f, p in self.scopes.items()) + ")"


ADMIN = Grant("MEMR1_API_KEY", {}, True)


class KeyRing:
    """Hashes of the accepted keys and what each may do."""

    def __init__(self, grants: dict[str, Grant]):
        self._grants = grants

    def __bool__(self) -> bool:
        return bool(self._grants)

    @classmethod
    def load(cls, single_key: str | None = None, keys_file: str | None = None) -> "KeyRing":
        grants = {}
        if single_key:
            grants[hash_key(single_key)] = ADMIN
        if keys_file:
            grants.update(_read(pathlib.Path(keys_file)))
        return cls(grants)

    def grant(self, given: str | None) -> Grant | None:
        if given is None:
            return None
        digest = hash_key(given)
        for stored, grant in self._grants.items():   # every entry compared: no early exit to time
            if hmac.compare_digest(stored, digest):
                return grant
        return None

    def describe(self) -> str:
        scoped = [g for g in self._grants.values() if not g.everything]
        if not scoped:
            return "one API key (MEMR1_API_KEY) for every scope"
        return (f"{len(self._grants)} API keys, {len(scoped)} bound to scopes"
                + (" and MEMR1_API_KEY for every scope" if ADMIN in self._grants.values() else ""))


def _read(path: pathlib.Path) -> dict[str, Grant]:
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"MEMR1_API_KEYS={path}: not a readable JSON file ({e})") from None
    entries = raw.get("keys") if isinstance(raw, dict) else None
    if not isinstance(entries, list) or not entries:
        raise ValueError(f'MEMR1_API_KEYS={path}: expected {{"keys": [{{"name", "sha256", "user_id", "write"}}, ...]}}')
    out = {}
    for i, e in enumerate(entries):
        where = f"MEMR1_API_KEYS={path}: keys[{i}]"
        if not isinstance(e, dict):
            raise ValueError(f"{where}: expected an object")
        unknown = set(e) - {"name", "sha256", "write", *SCOPE_KEYS}
        if unknown:
            raise ValueError(f"{where}: unknown fields {sorted(unknown)}")
        digest = e.get("sha256")
        if not isinstance(digest, str) or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"{where}.sha256: expected the key's SHA-256 as 64 hex digits (python -m "
                             "memr1_jax.service.keys KEY)")
        scopes = {}
        for field in SCOPE_KEYS:
            if field in e:
                v = e[field]
                v = [v] if isinstance(v, str) else v
                if not isinstance(v, list) or not v or not all(isinstance(x, str) and x.strip("*") for x in v):
                    raise ValueError(f"{where}.{field}: expected a value or a list of values (a prefix ends in *)")
                scopes[field] = tuple(v)
        if not scopes:
            raise ValueError(f"{where}: binds no scope (user_id, agent_id or run_id); a key for everything is "
                             "MEMR1_API_KEY")
        if not isinstance(e.get("write", False), bool):
            raise ValueError(f"{where}.write: expected true or false")
        if digest in out:
            raise ValueError(f"{where}: the same key as {out[digest].name!r}")
        out[digest] = Grant(str(e.get("name", f"keys[{i}]")), scopes, e.get("write", False))
    return out


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m memr1_jax.service.keys KEY   (prints the hash for MEMR1_API_KEYS)", file=sys.stderr)
        sys.exit(2)
    print(hash_key(sys.argv[1]))
