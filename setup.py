"""The build. Pure Python unless ATTRIBUTION_COMPILE=1, which compiles the attribution core with
mypyc (a third to a half more events/s, docs/benchmarks.md); the wheel and the image are
built that way, with mypy installed and `--no-build-isolation`."""

import os
from pathlib import Path

from setuptools import setup

# `immutable` is a dataclass_transform, which a compiled function cannot carry, and a compiled
# row class would hand its `table` to `dataclass` as a field.
KEPT_AS_SOURCE = {"values.py", "rows.py"}


def compiled_core() -> list[object]:
    if os.environ.get("ATTRIBUTION_COMPILE") != "1":
        return []
    from mypyc.build import mypycify

    modules = sorted(
        str(path) for path in Path("attribution").glob("*.py") if path.name not in KEPT_AS_SOURCE
    )
    return list(mypycify(modules, opt_level="3"))


setup(ext_modules=compiled_core())
