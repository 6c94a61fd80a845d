"""The API key check, shared by the guard middleware and ``/health``."""

from __future__ import annotations

import secrets


def key_ok(headers: dict[bytes, bytes], api_key: str | None) -> bool | None:
    """True/False for a right/wrong ``Authorization: Bearer`` key (True when no key is set), None when
    none was sent."""
    if not api_key:
        return True
    header = headers.get(b"authorization", b"").decode("latin-1")
    if not header:
        return None
    scheme, _, given = header.partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(given.strip().encode(), api_key.encode())
