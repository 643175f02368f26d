"""A worker refuses to start on a history restated under other settings, and while a restate is
pending: `attribution worker --processes 2` stops with exit code 78 (EX_CONFIG) and says which
settings differ, rather than starting its sink again forever or crediting orders under other
rules than every stored one (docs/scenarios.md).

No broker is needed: the refusal comes before any Kafka connection (the stage processes try an
address where nothing listens and are stopped with the service)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from clickhouse_connect.driver.client import Client

from sinks.clickhouse import connect
from sinks.migrations import migrate
from streams.cli import _settings_refusal
from streams.restate import _record, rule_values, rules_json, settings_refusal
from streams.settings import Settings
from streams.supervisor import REFUSED_TO_START
from streams.worker_process import free_port

pytestmark = pytest.mark.integration

TODAY, RESTATED = Settings(), Settings(lookback_days=7)


def record(client: Client, version: int, settings: str, state: str) -> None:
    """A row of the settings manifest, written as `attribution restate` writes it."""
    _record(
        client,
        [
            {
                "version": version,
                "settings": settings,
                "ruled_from": datetime(2026, version, 1, tzinfo=UTC),
                "ruled_to": None,
                "credits_table": "credits",
                "orders_table": "orders",
                "state": state,
            }
        ],
    )


# Run in a process of its own: the embedded engine's data dir is then free for the worker.
RECORD_VERSION_2 = """
import sys
from sinks.clickhouse import connect
from sinks.migrations import migrate
from tests.integration.test_settings_refusal import record
client = connect(sys.argv[1])
migrate(client)
record(client, 1, sys.argv[2], "kept")
record(client, 2, sys.argv[3], "active")
client.close()
"""


def test_a_worker_with_other_settings_than_the_active_version_stops_the_service(
    tmp_path: Path,
) -> None:
    dsn = f"chdb://{tmp_path / 'clickhouse'}"
    subprocess.run(
        [sys.executable, "-c", RECORD_VERSION_2, dsn, rules_json(TODAY), rules_json(RESTATED)],
        check=True,
        timeout=120,
    )
    env = {
        **os.environ,
        "ATTRIBUTION_CLICKHOUSE_DSN": dsn,
        "ATTRIBUTION_DATA_DIR": str(tmp_path / "data"),
        "ATTRIBUTION_KAFKA_URL": "kafka://127.0.0.1:9",  # nothing listens: no topic is made
        "ATTRIBUTION_WEB_PORT": str(free_port()),
    }
    worker = subprocess.run(
        [sys.executable, "-m", "streams.cli", "worker", "--processes", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert worker.returncode == REFUSED_TO_START == 78, worker.stderr[-2000:]
    assert (
        "not started: the stored credits follow settings version 2, and these settings differ: "
        "lookback_days 30 here, 7 there." in worker.stderr
    )
    assert "sink refused to start" in worker.stderr
    assert "sink exited with" not in worker.stderr  # not started again


def test_what_a_worker_is_compared_with(tmp_path: Path) -> None:
    client = connect(f"chdb://{tmp_path / 'clickhouse'}")
    try:
        migrate(client)
        assert settings_refusal(client, TODAY) is None  # nothing recorded
        # Version 1 records the settings of whoever ran the first restate: a guess, and a
        # restate that stopped after recording it leaves it active.
        record(client, 1, rules_json(RESTATED), "active")
        assert settings_refusal(client, TODAY) is None

        record(client, 1, rules_json(TODAY), "kept")
        record(client, 2, rules_json(RESTATED), "active")
        assert settings_refusal(client, RESTATED) is None
        refused = settings_refusal(client, TODAY)
        assert refused is not None and "lookback_days 30 here, 7 there." in refused

        # A setting a version did not record (it came later) is not compared.
        recorded = rule_values(RESTATED)
        del recorded["lookback_days"]
        record(client, 2, json.dumps(recorded), "active")
        assert settings_refusal(client, TODAY) is None

        record(client, 3, rules_json(TODAY), "pending")
        assert settings_refusal(client, RESTATED) == (
            "settings version 3 is pending: a restate is running or stopped half way; let it"
            " finish, or run `attribution restate` again to roll it back"
        )
    finally:
        client.close()


def test_a_clickhouse_server_that_does_not_answer_yet_is_not_waited_for(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The sink holds its rows until the server answers, as it does in any outage.
    assert _settings_refusal(Settings(clickhouse_dsn="http://127.0.0.1:9")) is None
    assert capsys.readouterr().err.startswith("settings not compared with the stored history's: ")
