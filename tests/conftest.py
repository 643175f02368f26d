from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from streams.settings import Settings
from streams.worker_process import WorkerProcess, free_port
from tests.integration.helpers import PII_SALT

KAFKA = ("127.0.0.1", 19092)
REDIS = ("127.0.0.1", 16379)


def _reachable(address: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(address, timeout=2):
            return True
    except OSError:
        return False


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Long tests first, so that a parallel run does not end on one of them alone; the others
    keep their order (a stable sort, the same in every pytest-xdist process)."""
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test that stops or freezes the shared broker fails every test running beside it: under
    pytest-xdist with more than one process it refuses to run instead."""
    parallel = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1
    if parallel and item.get_closest_marker("shared_broker"):
        pytest.fail("a shared_broker test runs alone: `pytest -m shared_broker` without -n")


@pytest.fixture(scope="session")
def services() -> None:
    """Kafka and Redis from `devstack/stack start`; missing services fail the test, never skip."""
    missing = [
        name for name, address in (("kafka", KAFKA), ("redis", REDIS)) if not _reachable(address)
    ]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} not reachable: run `devstack/stack start` (or `make test`)"
        )


@pytest.fixture
def isolated_settings(tmp_path: Path, services: None) -> Iterator[Settings]:
    """Settings with a unique topic prefix, app id, ClickHouse dir and web port for one test;
    its topics are deleted afterwards, so that a long-lived broker does not pile them up
    (ATTRIBUTION_TEST_KEEP_TOPICS=1 keeps them, to read a failed run's records)."""
    unique = f"t{uuid.uuid4().hex[:10]}"
    yield Settings(
        data_dir=tmp_path / "data",
        topic_prefix=unique,
        app_id=unique,
        web_port=free_port(),
        partitions=4,
        log_level="info",
        sink_batch_seconds=0.3,
        pii_salt=PII_SALT,
    )
    if not os.environ.get("ATTRIBUTION_TEST_KEEP_TOPICS"):
        asyncio.run(_delete_topics_of(unique))


async def _delete_topics_of(unique: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=f"{KAFKA[0]}:{KAFKA[1]}")
    await admin.start()
    try:
        # Topics of the prefix, changelogs of the app id (`<id>-<table>-changelog`), the
        # sink's consumer group topics (`<id>-sink-...`).
        doomed = [name for name in await admin.list_topics() if name.startswith(unique)]
        if doomed:
            await admin.delete_topics(doomed)
    finally:
        await admin.close()


@pytest.fixture
def worker(isolated_settings: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    process = WorkerProcess(isolated_settings, tmp_path / "worker.log")
    process.start()
    yield process
    process.stop()
