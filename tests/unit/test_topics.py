"""Replication settings and the topic checks a worker makes before it starts; no broker."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from agents import register_agents
from streams.app import create_topology
from streams.settings import Settings
from streams.topics import (
    Replication,
    TopicSetupError,
    check_partitions,
    replication_for,
    required_topics,
)

CLUSTER = Replication(factor=3, min_insync_replicas=2)


def test_defaults_are_safe_on_a_cluster() -> None:
    settings = Settings()
    assert (settings.replication_factor, settings.min_insync_replicas) == (3, 2)


def test_replication_settings_are_read_from_the_environment() -> None:
    settings = Settings.from_env(
        {"ATTRIBUTION_REPLICATION_FACTOR": "5", "ATTRIBUTION_MIN_INSYNC_REPLICAS": "3"}
    )
    assert (settings.replication_factor, settings.min_insync_replicas) == (5, 3)
    assert Settings.from_env(settings.as_env()) == settings


def test_more_insync_replicas_than_copies_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"min_insync_replicas \(2\) exceeds"):
        Settings(replication_factor=1)


@pytest.mark.parametrize("field", ["replication_factor", "min_insync_replicas"])
def test_no_copy_at_all_is_refused(field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        Settings(**{field: 0})


def test_a_cluster_with_enough_brokers_gets_the_settings() -> None:
    assert replication_for(Settings(), brokers=3) == CLUSTER
    assert replication_for(Settings(), brokers=5) == CLUSTER


def test_a_single_broker_gets_one_copy() -> None:
    assert replication_for(Settings(), brokers=1) == Replication(1, 1)


def test_a_cluster_missing_brokers_is_refused() -> None:
    with pytest.raises(TopicSetupError, match=r"replication_factor is 3 .* lists 2 brokers"):
        replication_for(Settings(), brokers=2)


def test_every_topic_gets_the_replication() -> None:
    topics = required_topics(Settings(app_id="a", topic_prefix="p"), CLUSTER)
    assert {topic.replication_factor for topic in topics} == {3}
    assert {topic.topic_configs["min.insync.replicas"] for topic in topics} == {"2"}
    compacted = {t.name for t in topics if t.topic_configs.get("cleanup.policy") == "compact"}
    assert compacted == {
        f"a-{table}-changelog" for table in ("traffic", "visitors", "ledgers", "journeys")
    }


@pytest.mark.parametrize("role", ["all", "stages", "sink"])
def test_required_topics_are_every_topic_the_faust_app_uses(role: str) -> None:
    # A topic missing here would be created by Faust itself, with the configured factor even
    # on a single broker, where that fails.
    settings = Settings(app_id="a", topic_prefix="p", role=role)
    topology = create_topology(settings)
    register_agents(topology)
    written = (
        topology.events,
        topology.traffic_commands,
        topology.visitor_commands,
        topology.order_commands,
        topology.journey_commands,
        topology.rows,
        topology.dead_letters,
    )
    read = (agent.channel for agent in topology.app.agents.values())
    used = {(topic.get_topic_name(), topic.partitions) for topic in (*written, *read)} | {
        (table.changelog_topic.get_topic_name(), table.partitions)
        for table in topology.app.tables.values()
    }
    # Faust names its leader topic in a private property; faust-streaming is pinned.
    leader_assignor: Any = topology.app._leader_assignor
    used.add((leader_assignor._leader_topic_name, 1))
    required = {(t.name, t.num_partitions) for t in required_topics(settings, CLUSTER)}
    assert required == used


def test_a_topic_with_another_partition_count_is_refused_with_its_name_and_count() -> None:
    settings = Settings(app_id="a", topic_prefix="p", partitions=4)
    check_partitions(settings, {"p.events": 4, "a-ledgers-changelog": 4, "other": 12})
    with pytest.raises(TopicSetupError) as refused:
        check_partitions(settings, {"p.events": 4, "a-ledgers-changelog": 6})
    assert str(refused.value).startswith(
        "topic 'a-ledgers-changelog' has 6 partitions but partitions is 4 (ATTRIBUTION_PARTITIONS)"
    )


def test_a_sink_does_not_check_changelogs_it_never_reads() -> None:
    check_partitions(Settings(app_id="a", role="sink"), {"a-ledgers-changelog": 6})
