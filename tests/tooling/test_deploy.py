"""The files users deploy with: docker-compose parses, and the worker image's config is sane."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.tooling

ROOT = Path(__file__).parents[2]


def test_docker_compose_file_is_valid() -> None:
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is not installed (apt-get install docker-compose)")
    result = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_the_worker_reaches_a_clickhouse_server_through_an_http_dsn() -> None:
    from clickhouse_connect.driver import create_client

    # No server runs here: a client that cannot connect must fail loudly, naming the host.
    with pytest.raises(Exception, match=r"127\.0\.0\.1"):
        create_client(dsn="http://attribution:secret@127.0.0.1:1/attribution", connect_timeout=1)
