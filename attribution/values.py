"""Immutable values that are cheap to build."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar, dataclass_transform

Value = TypeVar("Value")


@dataclass_transform(frozen_default=True)
def immutable(cls: type[Value]) -> type[Value]:
    """A slotted, hashable dataclass that mypy holds immutable (assigning a field is a type
    error), built without `frozen=True`'s `object.__setattr__` per field: that makes a 24-field
    row nine times dearer to construct, and the stages build several rows and messages per event.

    >>> @immutable
    ... class Point:
    ...     x: int
    ...     y: int = 0
    >>> Point(1) == Point(1, 0), hash(Point(1)) == hash(Point(1, 0))
    (True, True)
    """
    return dataclass(slots=True, unsafe_hash=True)(cls)
