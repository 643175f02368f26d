"""Personal data the storefront sends (IP address, user agent) is kept only as keyed hashes.

A keyed hash (HMAC-SHA256 with a secret from settings) still lets analysts count distinct
devices or spot click fraud from one address, but cannot be reversed by hashing candidate
addresses without the key. Without a key nothing is kept at all.
"""

from __future__ import annotations

import hmac
import re
from typing import Any


def keyed_hash(value: str | None, key: bytes) -> str:
    """32 hex digits of HMAC-SHA256(key, value); '' without a value or a key.

    >>> keyed_hash("203.0.113.7", b"k") == keyed_hash("203.0.113.7", b"k")
    True
    >>> keyed_hash("203.0.113.7", b"k") != keyed_hash("203.0.113.7", b"other")
    True
    >>> keyed_hash("203.0.113.7", b""), keyed_hash(None, b"k")
    ('', '')
    """
    if not value or not key:
        return ""
    return hmac.digest(key, value.encode(), "sha256").hex()[:32]


# Fields of storefront and Shopify payloads that identify a person, hashed wherever they nest.
PERSONAL_FIELDS = frozenset(
    {
        "ip",
        "user_agent",
        "browser_ip",
        "email",
        "phone",
        "first_name",
        "last_name",
        "name",
        "address1",
        "address2",
    }
)
_PERSONAL_TEXT = re.compile(
    rb'"('
    + b"|".join(sorted(f.encode() for f in PERSONAL_FIELDS))
    + rb')"\s*:\s*"((?:[^"\\]|\\.)*)"'
)


def scrub_personal_data(document: Any, key: bytes) -> Any:
    """A copy of a JSON document with every personal field's text replaced by its keyed hash.

    >>> scrub_personal_data({"ip": "203.0.113.7", "items": [{"email": "a@b.c"}]}, b"")
    {'ip': '', 'items': [{'email': ''}]}
    """
    pending: list[tuple[Any, Any]] = []
    root = _shallow_scrub(document, key, pending)
    while pending:
        copy, original = pending.pop()
        for index_or_name, value in (
            original.items() if isinstance(original, dict) else enumerate(original)
        ):
            copy[index_or_name] = _shallow_scrub(value, key, pending, index_or_name)
    return root


def _shallow_scrub(value: Any, key: bytes, pending: list[tuple[Any, Any]], name: Any = None) -> Any:
    # Iterative, not recursive: a dead letter may be JSON nested as deep as the parser allows.
    if name in PERSONAL_FIELDS and isinstance(value, str):
        return keyed_hash(value, key)
    if isinstance(value, dict):
        copy: dict[str, Any] = dict.fromkeys(value)
        pending.append((copy, value))
        return copy
    if isinstance(value, list):
        items: list[Any] = [None] * len(value)
        pending.append((items, value))
        return items
    return value


def scrub_personal_text(raw: bytes, key: bytes) -> bytes:
    """Raw bytes that are not valid JSON, with `"<personal field>": "text"` pairs hashed.

    >>> scrub_personal_text(b'{"ip": "203.0.113.7", "x": 1', b"")
    b'{"ip": "", "x": 1'
    """
    return _PERSONAL_TEXT.sub(
        lambda match: (
            b'"%s": "%s"'
            % (match.group(1), keyed_hash(match.group(2).decode(errors="replace"), key).encode())
        ),
        raw,
    )
