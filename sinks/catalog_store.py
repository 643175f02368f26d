"""The catalog in Redis, where every worker reads it, published atomically with a version."""

from __future__ import annotations

from collections.abc import Collection
from datetime import date, datetime
from typing import Any

from attribution.catalog import CreditTarget, InfluencerProfile, StaticCatalog, tier_for
from attribution.fx import DEFAULT_REPORTING_CURRENCY, ExchangeRates
from schemas.catalog import CatalogFiles
from schemas.fx_rates import bundled_ecb_rates


def _keys(namespace: str) -> tuple[str, str]:
    return f"{namespace}:catalog", f"{namespace}:catalog:version"


def exchange_rates(files: CatalogFiles, reporting_currency: str) -> ExchangeRates:
    """The shipped ECB history with the catalog's newer or corrected rates on top."""
    return ExchangeRates(reporting_currency, bundled_ecb_rates()).overlaid(files.fx_rates)


def to_static_catalog(
    files: CatalogFiles, reporting_currency: str = DEFAULT_REPORTING_CURRENCY
) -> StaticCatalog:
    return StaticCatalog(
        influencers={
            row.influencer_id: InfluencerProfile(
                row.influencer_id, row.handle, row.platform, row.followers
            )
            for row in files.influencers
        },
        links={
            row.link_id: CreditTarget(row.influencer_id, row.campaign_id) for row in files.links
        },
        codes={
            row.code.upper(): CreditTarget(
                row.influencer_id, row.campaign_id, row.credit_policy == "if_involved"
            )
            for row in files.codes
        },
        exchange_rates=exchange_rates(files, reporting_currency),
        code_policies={
            row.campaign_id: row.code_policy for row in files.campaigns if row.code_policy
        },
    )


def publish_catalog(redis_url: str, namespace: str, files: CatalogFiles) -> int:
    """Replace the catalog of `namespace` (the topic prefix) atomically; return its version."""
    import redis

    catalog_key, version_key = _keys(namespace)
    client = redis.Redis.from_url(redis_url)
    try:
        with client.pipeline(transaction=True) as pipe:
            pipe.set(catalog_key, files.model_dump_json())
            pipe.incr(version_key)
            _, version = pipe.execute()
        return int(version)
    finally:
        client.close()


class RedisCatalogCache:
    """A worker's local copy of the catalog, refreshed when the published version changes."""

    def __init__(
        self, redis_url: str, namespace: str, reporting_currency: str = DEFAULT_REPORTING_CURRENCY
    ) -> None:
        self._redis_url = redis_url
        self._catalog_key, self._version_key = _keys(namespace)
        self._reporting_currency = reporting_currency
        self.version = -1
        self.files = CatalogFiles()
        self.catalog = to_static_catalog(self.files, reporting_currency)

    async def refresh(self) -> bool:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(self._redis_url)
        try:
            version = int(await client.get(self._version_key) or 0)
            if version == self.version:
                return False
            raw = await client.get(self._catalog_key)
        finally:
            await client.aclose()
        self.files = CatalogFiles.model_validate_json(raw) if raw else CatalogFiles()
        self.catalog = to_static_catalog(self.files, self._reporting_currency)
        self.version = version
        return True


def catalog_rows(
    files: CatalogFiles,
    version: int,
    loaded_at: datetime,
    rates: ExchangeRates,
    *,
    rates_published_on: Collection[date] | None = None,
) -> list[dict[str, Any]]:
    """The catalog as rows of the ClickHouse dimension tables, all at `version` (the `catalog_*`
    views show the newest version only), and the exchange rates in force with it: of the days
    `rates_published_on` only when given (`fx_rates` is not versioned: rows written again change
    nothing)."""
    rows: list[dict[str, Any]] = [
        {"table": "catalog_versions", "catalog_version": version, "loaded_at": loaded_at}
    ]
    rows += [
        {
            "table": "dim_influencers",
            "catalog_version": version,
            **row.model_dump(),
            "tier": tier_for(row.followers),
        }
        for row in files.influencers
    ]
    rows += [
        {
            "table": "dim_codes",
            "catalog_version": version,
            **row.model_dump(),
            "code": row.code.upper(),
        }
        for row in files.codes
    ]
    for table, file_rows in (
        ("dim_campaigns", files.campaigns),
        ("dim_links", files.links),
        ("dim_contracts", files.contracts),
    ):
        rows += [
            {"table": table, "catalog_version": version, **row.model_dump()} for row in file_rows
        ]
    return rows + fx_rate_rows(rates, rates_published_on)


def fx_rate_rows(
    rates: ExchangeRates, published_on_days: Collection[date] | None = None
) -> list[dict[str, Any]]:
    """Every published rate into the reporting currency (of `published_on_days` when given),
    for the views that convert contract money (`campaign_fx`); orders carry their own locked
    rate."""
    return [
        {
            "table": "fx_rates",
            "currency": currency,
            "published_on": published_on,
            "rate": rate,
            "reporting_currency": rates.reporting_currency,
        }
        for published_on, currency, rate in rates.cross_rates(published_on_days)
    ]
