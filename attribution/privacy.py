"""Personal data the storefront sends (IP address, user agent) is kept only as keyed hashes.

A keyed hash (HMAC-SHA256 with a secret from settings) still lets analysts count distinct
devices or spot click fraud from one address, but cannot be reversed by hashing candidate
addresses without the key. Without a key nothing is kept at all.
"""

from __future__ import annotations

import hashlib
import hmac


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
    return hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:32]
