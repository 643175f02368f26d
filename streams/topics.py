"""Creating the worker's topics before Faust subscribes to them.

On a broker that has just started, topics Faust creates on its own may not be in the
cluster metadata yet when its consumer subscribes; the consumer then ignores them
until a later metadata refresh and consumes nothing for minutes. Creating them first
and waiting until the broker lists them removes that race.

Topics get the settings' replication factor and `min.insync.replicas` when they are created.
Topics that already exist keep theirs, but must have the settings' partition count: commands
are routed to the partition their key hashes to, so a different count sends a key's commands
where its state is not.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.settings import Settings

log = logging.getLogger(__name__)

STREAM_TOPICS = (
    "events",
    "traffic-commands",
    "visitor-commands",
    "order-commands",
    "journey-commands",
    "rows",
    "dead-letters",
)
TABLES = ("traffic", "visitors", "ledgers", "journeys")


class TopicSetupError(RuntimeError):
    """The cluster or its existing topics do not fit the settings; the worker must not start."""


@dataclass(frozen=True)
class Replication:
    factor: int
    min_insync_replicas: int


def faust_app_id(settings: Settings) -> str:
    """The id Faust runs under: its consumer group and the prefix of its own topics.

    A sink has no tables: its own consumer group reads the rows topic, whatever the number of
    stage workers.
    """
    return f"{settings.app_id}-sink" if settings.role == "sink" else settings.app_id


def replication_for(settings: Settings, brokers: int) -> Replication:
    """The replication new topics get on a cluster that lists `brokers` brokers.

    One broker is a development broker (the devstack): it can hold one copy, so topics get
    factor 1 (the caller warns). Several brokers, but fewer than the factor, is a cluster with
    brokers missing: creating under-replicated topics there would last, so refuse.

    >>> replication_for(Settings(), 3)
    Replication(factor=3, min_insync_replicas=2)
    >>> replication_for(Settings(), 1)
    Replication(factor=1, min_insync_replicas=1)
    """
    if brokers >= settings.replication_factor:
        return Replication(settings.replication_factor, settings.min_insync_replicas)
    if brokers == 1:
        return Replication(1, 1)
    raise TopicSetupError(
        f"replication_factor is {settings.replication_factor} (ATTRIBUTION_REPLICATION_FACTOR) "
        f"but the cluster lists {brokers} brokers: start the missing brokers, or lower the "
        "setting (and ATTRIBUTION_MIN_INSYNC_REPLICAS) for a smaller cluster"
    )


def changelog_topics(settings: Settings) -> list[str]:
    """The tables' changelogs, for a worker that keeps tables."""
    return [] if settings.role == "sink" else [f"{settings.app_id}-{t}-changelog" for t in TABLES]


def required_topics(settings: Settings, replication: Replication) -> list[NewTopic]:
    """Every topic a worker of this role reads or writes, as Faust would create it."""
    configs = {"min.insync.replicas": str(replication.min_insync_replicas)}

    def new(name: str, partitions: int, **extra: str) -> NewTopic:
        return NewTopic(name, partitions, replication.factor, topic_configs={**configs, **extra})

    streams = [new(settings.topic(name), settings.partitions) for name in STREAM_TOPICS]
    compact = {"cleanup.policy": "compact"}
    changelogs = [new(name, settings.partitions, **compact) for name in changelog_topics(settings)]
    # Faust's partition assignor elects its group leader through this one-partition topic.
    leader = new(f"{faust_app_id(settings)}-__assignor-__leader", 1)
    return [*streams, *changelogs, leader]


def check_partitions(settings: Settings, existing: Mapping[str, int]) -> None:
    """Refuse stream topics and changelogs that exist with another partition count than the
    settings' (`existing`: name -> partition count of the topics the cluster has).

    >>> check_partitions(Settings(topic_prefix="a"), {"a.events": 8})
    Traceback (most recent call last):
    ...
    streams.topics.TopicSetupError: topic 'a.events' has 8 partitions but partitions is 4 \
(ATTRIBUTION_PARTITIONS): commands are routed by partition, so a key's commands would reach a \
worker without its state; recreate the topic or set ATTRIBUTION_PARTITIONS=8
    """
    for name in [*(settings.topic(name) for name in STREAM_TOPICS), *changelog_topics(settings)]:
        actual = existing.get(name)
        if actual is not None and actual != settings.partitions:
            raise TopicSetupError(
                f"topic {name!r} has {actual} partitions but partitions is {settings.partitions} "
                "(ATTRIBUTION_PARTITIONS): commands are routed by partition, so a key's commands "
                "would reach a worker without its state; recreate the topic or set "
                f"ATTRIBUTION_PARTITIONS={actual}"
            )


async def ensure_topics(settings: Settings, timeout_seconds: float = 60.0) -> None:
    """Create the missing topics and wait until the broker's metadata lists all of them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        brokers = len((await admin.describe_cluster())["brokers"])
        replication = replication_for(settings, brokers)
        wanted = required_topics(settings, replication)
        # All topics: a metadata request naming a missing topic would have the broker
        # auto-create it with its own defaults.
        existing = {
            topic["topic"]: len(topic["partitions"])
            for topic in await admin.describe_topics()
            if topic["error_code"] == 0
        }
        check_partitions(settings, existing)
        missing = [topic for topic in wanted if topic.name not in existing]
        if missing:
            if replication.factor < settings.replication_factor:
                log.warning(
                    "a single broker holds one copy: creating %d topics with replication "
                    "factor 1 and min.insync.replicas 1 instead of %d and %d, for development "
                    "only (set ATTRIBUTION_REPLICATION_FACTOR=1 and "
                    "ATTRIBUTION_MIN_INSYNC_REPLICAS=1 to say so)",
                    len(missing),
                    settings.replication_factor,
                    settings.min_insync_replicas,
                )
            await _create(admin, missing)
        names = {topic.name for topic in wanted}
        deadline = asyncio.get_running_loop().time() + timeout_seconds
        while not names <= set(await admin.list_topics()):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"topics not listed by the broker: {sorted(names)}")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def _create(admin: AIOKafkaAdminClient, topics: list[NewTopic]) -> None:
    response = await admin.create_topics(topics)
    for name, code, message in response.topic_errors:
        # Another worker may create them at the same moment: that is fine.
        if code not in (0, TopicAlreadyExistsError.errno):
            raise TopicSetupError(f"cannot create topic {name!r} (Kafka error {code}): {message}")
