"""The catalog in Redis, where every worker reads it, published atomically with a version."""

from __future__ import annotations

from attribution.catalog import CreditTarget, InfluencerProfile, StaticCatalog
from schemas.catalog import CatalogFiles

CATALOG_KEY = "attribution:catalog"
VERSION_KEY = "attribution:catalog:version"


def to_static_catalog(files: CatalogFiles) -> StaticCatalog:
    return StaticCatalog(
        influencers={
            row.influencer_id: InfluencerProfile(
                row.influencer_id, row.handle, row.platform, row.followers
            )
            for row in files.influencers
        },
        links={row.link_id: CreditTarget(row.influencer_id, row.campaign_id) for row in files.links},
        codes={
            row.code.upper(): CreditTarget(row.influencer_id, row.campaign_id) for row in files.codes
        },
    )


def publish_catalog(redis_url: str, files: CatalogFiles) -> int:
    """Replace the catalog in one transaction; return its new version."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        with client.pipeline(transaction=True) as pipe:
            pipe.set(CATALOG_KEY, files.model_dump_json())
            pipe.incr(VERSION_KEY)
            _, version = pipe.execute()
        return int(version)
    finally:
        client.close()


class RedisCatalogCache:
    """A worker's local copy of the catalog, refreshed when the published version changes."""

    def __init__(self, redis_url: str) -> None:
        self._redis_url = redis_url
        self.version = -1
        self.catalog = StaticCatalog()
        self.files = CatalogFiles()

    async def refresh(self) -> bool:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(self._redis_url)
        try:
            version = int(await client.get(VERSION_KEY) or 0)
            if version == self.version:
                return False
            raw = await client.get(CATALOG_KEY)
        finally:
            await client.aclose()
        self.files = CatalogFiles.model_validate_json(raw) if raw else CatalogFiles()
        self.catalog = to_static_catalog(self.files)
        self.version = version
        return True
