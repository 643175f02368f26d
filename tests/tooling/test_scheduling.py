"""How `make test` schedules the suite: a test that stops or freezes the shared broker refuses to
run beside others (tests/conftest.py), checked on a test of its own so that the broker is never
touched."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.tooling

ROOT = Path(__file__).parents[2]
STOPS_THE_BROKER = """
import pytest

@pytest.mark.shared_broker
def test_stops_the_broker() -> None:
    pass

def test_beside_it() -> None:
    pass
"""


def run_suite(directory: Path, *options: str) -> subprocess.CompletedProcess[str]:
    shutil.copy(ROOT / "tests" / "conftest.py", directory / "conftest.py")
    (directory / "test_broker.py").write_text(STOPS_THE_BROKER)
    (directory / "pytest.ini").write_text("[pytest]\nmarkers =\n    shared_broker: alone\n")
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}
    environment.pop("PYTEST_XDIST_WORKER_COUNT", None)  # this test's own run may be parallel
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *options],
        cwd=directory,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_shared_broker_test_refuses_to_run_beside_others(tmp_path: Path) -> None:
    parallel = run_suite(tmp_path, "-n", "2")
    assert parallel.returncode == 1, parallel.stdout + parallel.stderr
    assert "a shared_broker test runs alone" in parallel.stdout
    assert "1 passed, 1 error" in parallel.stdout


def test_alone_it_runs(tmp_path: Path) -> None:
    alone = run_suite(tmp_path, "-m", "shared_broker")
    assert alone.returncode == 0, alone.stdout + alone.stderr
    assert "1 passed, 1 deselected" in alone.stdout
