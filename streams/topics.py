"""Creating the worker's topics before Faust subscribes to them.

On a broker that has just started, topics Faust creates on its own may not be in the
cluster metadata yet when its consumer subscribes; the consumer then ignores them
until a later metadata refresh and consumes nothing for minutes. Creating them first
and waiting until the broker lists them removes that race.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from streams.settings import Settings

STREAM_TOPICS = (
    "events",
    "visitor-commands",
    "order-commands",
    "journey-commands",
    "rows",
    "dead-letters",
)
TABLES = ("visitors", "ledgers", "journeys")


def required_topics(settings: Settings) -> list[NewTopic]:
    """Every topic a worker reads or writes, as Faust would create it."""
    streams = [NewTopic(settings.topic(name), settings.partitions, 1) for name in STREAM_TOPICS]
    changelogs = [
        NewTopic(
            f"{settings.app_id}-{table}-changelog",
            settings.partitions,
            1,
            topic_configs={"cleanup.policy": "compact"},
        )
        for table in TABLES
    ]
    leader = NewTopic(f"{settings.app_id}-__assignor-__leader", 1, 1)
    return [*streams, *changelogs, leader]


async def ensure_topics(settings: Settings, timeout_seconds: float = 60.0) -> None:
    """Create the missing topics and wait until the broker's metadata lists all of them."""
    wanted = required_topics(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [topic for topic in wanted if topic.name not in existing]
        if missing:
            # Another worker may create them at the same moment: that is fine.
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(missing)
        names = {topic.name for topic in wanted}
        deadline = asyncio.get_running_loop().time() + timeout_seconds
        while not names <= set(await admin.list_topics()):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"topics not listed by the broker: {sorted(names)}")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()
