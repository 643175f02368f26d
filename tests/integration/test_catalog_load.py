"""`attribution catalog load` publishes all or nothing, and a running worker picks it up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from streams.settings import Settings
from streams.worker_process import WorkerProcess
from tests.integration.helpers import click, feed
from tests.waiting import wait_until

pytestmark = pytest.mark.integration

INFLUENCERS = "influencer_id,handle,platform,followers\nanna,anna.styles,instagram,45000\n"


def load(settings: Settings, directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "catalog", "load", str(directory)],
        env={**os.environ, **settings.as_env()},
        capture_output=True,
        text=True,
        check=False,
    )


def published_version(settings: Settings) -> int:
    client = redis.Redis.from_url(settings.redis_url)
    try:
        return int(client.get(f"{settings.topic_prefix}:catalog:version") or 0)
    finally:
        client.close()


def catalog_dir(root: Path, links: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "influencers.csv").write_text(INFLUENCERS)
    (root / "links.csv").write_text("link_id,influencer_id,campaign_id\n" + links)
    return root


def test_a_bad_file_publishes_nothing(isolated_settings: Settings, tmp_path: Path) -> None:
    good = load(isolated_settings, catalog_dir(tmp_path / "good", "l1,anna,spring\n"))
    assert good.returncode == 0, good.stderr
    assert published_version(isolated_settings) == 1
    bad = catalog_dir(tmp_path / "bad", "l2,anna,spring\n")
    (bad / "codes.csv").write_text("code,influencer_id,campaign_id\nANNA10,anna\n")
    refused = load(isolated_settings, bad)
    assert refused.returncode == 1
    assert "codes.csv:2: campaign_id" in refused.stderr
    assert published_version(isolated_settings) == 1


def test_a_running_worker_sees_a_new_link_without_restarting(
    worker: WorkerProcess, tmp_path: Path
) -> None:
    settings = worker.settings
    assert load(settings, catalog_dir(tmp_path / "v1", "")).returncode == 0
    worker.wait_for_catalog(1)
    feed(settings, [json.dumps(click("before", url="https://s/", link_id="l-new")).encode()])
    assert load(settings, catalog_dir(tmp_path / "v2", "l-new,anna,spring\n")).returncode == 0
    worker.wait_for_catalog(2)
    feed(settings, [json.dumps(click("after", url="https://s/", link_id="l-new")).encode()])
    sql = "SELECT event_id, influencer_id, tier FROM clicks FINAL ORDER BY event_id"
    expected = [["after", "anna", "micro"], ["before", "", ""]]
    wait_until(
        lambda: worker.sql(sql) == expected,
        timeout=60,
        what="the click after the new catalog credited to anna, the one before to nobody",
    )
    # Analysts see the newest catalog in ClickHouse, with tiers derived from followers.
    assert worker.sql("SELECT influencer_id, tier FROM catalog_influencers") == [["anna", "micro"]]
    assert worker.sql("SELECT link_id FROM catalog_links") == [["l-new"]]
    assert worker.sql("SELECT max(catalog_version) FROM catalog_versions") == [[2]]
