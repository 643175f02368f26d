"""Benchmarks: they print figures and write them as JSON; none asserts a speed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def report(figures: dict[str, Any], out: Path) -> None:
    """Write `figures` to `out` as JSON and print them as a two-column table."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(figures, indent=2))
    width = max(map(len, figures)) + 2
    for name, value in figures.items():
        print(f"{name:{width}} {value}")
