"""`attribution worker --processes 2`: one sink and two stage processes run as one service,
share the partitions, survive one of them being killed, and stop together."""

from __future__ import annotations

import json
import os
import signal
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas.catalog import read_catalog_dir
from simulation.storefront import Storefront
from sinks.catalog_store import publish_catalog
from streams.backfill import load_history
from streams.settings import Settings
from streams.supervisor import process_settings
from streams.worker_process import WorkerProcess
from tests.integration.helpers import (
    PII_SALT,
    events_consumed,
    feed,
    replay_credits,
    wait_for_credits,
)
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

SHOPPERS = 2_000


def _children(pid: int) -> dict[int, int]:
    """The supervisor's live worker processes: web port -> pid."""
    children = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environ = (entry / "environ").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if parent == pid:
            port = next(v for v in environ if v.startswith(b"ATTRIBUTION_WEB_PORT="))
            children[int(port.split(b"=", 1)[1])] = int(entry.name)
    return children


@pytest.mark.long
def test_a_sink_and_two_stage_processes_share_the_work_and_outlive_a_killed_one(
    isolated_settings: Settings, tmp_path: Path
) -> None:
    storefront = Storefront(datetime(2026, 6, 1, tzinfo=UTC), seed=43)
    catalog_dir = storefront.write_catalog(tmp_path / "catalog")
    history, live = storefront.split_history(storefront.events(SHOPPERS))
    history_lines = [json.dumps(event).encode() for event in history]
    lines = [json.dumps(event).encode() for event in live]
    service = WorkerProcess(isolated_settings, tmp_path / "service.log", processes=2)
    # Never started: views of the service's stage processes, through their own web ports.
    stages = [
        WorkerProcess(child, tmp_path / f"{child.data_dir.name}.log")
        for child in process_settings(isolated_settings, 2)[1:]
    ]
    service.start()
    try:
        assert service.pid is not None
        supervisor = service.pid
        ports = _children(supervisor)
        assert sorted(ports) == [isolated_settings.web_port + i for i in range(3)]
        version = publish_catalog(
            isolated_settings.redis_url,
            isolated_settings.topic_prefix,
            read_catalog_dir(catalog_dir),
        )
        for worker in [service, *stages]:
            worker.wait_for_catalog(version)
        load_history(isolated_settings, history_lines)
        feed(isolated_settings, lines[: len(lines) // 2])
        wait_until(
            lambda: all(events_consumed(stage) > 0 for stage in stages),
            timeout=120,
            what="both stage processes consuming",
        )
        killed_port = stages[0].settings.web_port
        os.kill(ports[killed_port], signal.SIGKILL)
        feed(isolated_settings, lines[len(lines) // 2 :])
        wait_until(
            lambda: (
                _children(supervisor).get(killed_port, ports[killed_port]) != ports[killed_port]
            ),
            timeout=30,
            what="the killed stage process started again",
        )
        seen_pids = {*ports.values(), *_children(supervisor).values()}
        expected = replay_credits(
            [*history_lines, *lines], catalog_dir, Settings(pii_salt=PII_SALT)
        )
        actual = wait_for_credits(service, expected, timeout=240)
        seen_pids |= set(_children(supervisor).values())
    finally:
        service.stop()
    assert actual == expected
    survivors = [pid for pid in seen_pids if Path(f"/proc/{pid}").exists()]
    assert not survivors, "a worker process outlived the service"
