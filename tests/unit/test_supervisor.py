"""What `attribution worker --processes N` starts (streams/supervisor.py); the running service
is tested in tests/integration/test_processes.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.cli import main
from streams.settings import Settings
from streams.supervisor import default_stage_processes, process_settings


def test_one_sink_on_the_web_port_and_each_stage_process_on_the_next_ports() -> None:
    settings = Settings(data_dir=Path("/srv/attribution"), web_port=7000)
    sink, *stages = process_settings(settings, 3)
    assert (sink.role, sink.web_port, sink.data_dir) == (
        "sink",
        7000,
        Path("/srv/attribution/sink"),
    )
    # Where `attribution sql` and a single-process worker find the embedded engine.
    assert sink.clickhouse == settings.clickhouse == "chdb:///srv/attribution/clickhouse"
    assert [(s.role, s.web_port, s.data_dir.name) for s in stages] == [
        ("stages", 7001, "stages-1"),
        ("stages", 7002, "stages-2"),
        ("stages", 7003, "stages-3"),
    ]
    assert {s.app_id for s in stages} == {settings.app_id}  # the stages share one group


def test_one_stage_process_a_core_and_no_more_than_partitions_to_share(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)))
    assert default_stage_processes(Settings(partitions=64)) == 8
    assert default_stage_processes(Settings(partitions=4)) == 4


def test_a_worker_of_one_role_refuses_to_be_split_further(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ATTRIBUTION_ROLE", "stages")
    with pytest.raises(SystemExit, match="ATTRIBUTION_ROLE must be all"):
        main(["worker", "--processes", "2"])
