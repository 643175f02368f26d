"""One frozen settings object, read from ATTRIBUTION_* environment variables."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from attribution.fx import DEFAULT_REPORTING_CURRENCY
from attribution.rules import ClickPolicy, CodePolicy, Rules
from schemas.events import Currency

ENV_PREFIX = "ATTRIBUTION_"


class Settings(BaseModel):
    """Every knob of a worker; `Settings.from_env()` reads `ATTRIBUTION_<FIELD>` variables.

    >>> Settings.from_env({"ATTRIBUTION_PARTITIONS": "8"}).partitions
    8
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    data_dir: Path = Path(".data").absolute()
    kafka_url: str = "kafka://127.0.0.1:19092"
    redis_url: str = "redis://127.0.0.1:16379/0"
    clickhouse_dsn: str = ""
    topic_prefix: str = "attribution"
    app_id: str = "attribution"
    partitions: int = 4
    # Copies of every partition of the worker's topics, and how many must hold a record before
    # Kafka acknowledges it (the producers send with acks=all). Safe on a cluster: one broker
    # can be lost without losing or refusing a write. On a single broker the worker creates its
    # topics with 1 and 1 and logs a warning (streams/topics.py).
    replication_factor: int = Field(default=3, ge=1)
    min_insync_replicas: int = Field(default=2, ge=1)
    # "all" runs everything in one process. To scale out, run several "stages" workers (one
    # consumer group, same app_id) and one "sink" per embedded ClickHouse data dir (consumer
    # group "<app_id>-sink"), or several sinks against a ClickHouse server.
    role: Literal["all", "stages", "sink"] = "all"
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    log_level: str = "info"
    lookback_days: float = 30
    half_life_days: float = 7
    restatement_window_days: float = 7
    refund_window_days: float = 180
    max_touchpoints: int = 50
    allowed_lateness_days: float = 14
    # What a promo code does when the journey also has influencer clicks (docs/attribution.md);
    # a campaign's `code_policy` column in campaigns.csv overrides it for that campaign's codes.
    code_policy: CodePolicy = CodePolicy.CODE_AS_LAST_TOUCH
    # What invalid and suspicious clicks earn, and the thresholds of the rules that classify
    # them (docs/fraud.md). The IP-address rules need `pii_salt`: without it no address is kept.
    click_policy: ClickPolicy = ClickPolicy.MODERATE
    duplicate_click_window_seconds: float = Field(default=3600, gt=0)
    click_burst_limit: int = Field(default=10, ge=1)
    click_burst_window_seconds: float = Field(default=600, gt=0)
    min_click_to_order_seconds: float = Field(default=15, ge=0)
    # The one currency of every KPI view and payout; each order is converted at the ECB rate of
    # its day (docs/attribution.md#many-currencies).
    reporting_currency: Currency = DEFAULT_REPORTING_CURRENCY
    sink_batch_rows: int = 20000
    # The sink saves at this fixed rate: a row waits up to this long before its insert, a third
    # of the 1.5 s latency objective (docs/operations.md).
    sink_batch_seconds: float = 0.5
    # A flush per this many events (ingest) or commands (stages), and at least every
    # stage_batch_seconds; what a batch led to is sent by its flush (agents/emit.py::Outbox).
    stage_batch_events: int = 1000
    stage_batch_seconds: float = 0.05
    catalog_refresh_seconds: float = 2.0
    # How often orders still waiting for their day's exchange rate are checked again.
    fx_retry_seconds: float = 60.0
    # Data-driven models (docs/models.md): whether this sink worker runs them (one worker per
    # ClickHouse must: several sinks against one server set it on one only), how often it writes
    # paths and credits orders under `markov` and `shapley`, how often it computes the weights,
    # over how many days of journeys ending at the event-time watermark, and how far back a new
    # weights version reweighs orders (older ones keep the version they were credited with).
    data_driven: bool = True
    data_driven_interval_seconds: float = Field(default=5.0, gt=0)
    # Live traffic first: after each page of orders, a pass stops for the tick while the sink's
    # latest save held a credit that waited longer than this (agents/datadriven.py).
    data_driven_yield_seconds: float = Field(default=1.0, gt=0)
    weights_interval_seconds: float = Field(default=3600.0, gt=0)
    weights_window_days: float = Field(default=90, gt=0)
    weights_reweigh_days: float = Field(default=30, ge=0)
    sweep_interval_seconds: float = 60.0
    lag_interval_seconds: float = 5.0
    business_metrics_seconds: float = 30.0
    # A payout period (a UTC month) closes this many days after its end, once `attribution
    # payouts` runs; later restatements are paid as adjustments (docs/payouts.md).
    payout_lock_days: int = Field(default=30, ge=0)
    log_format: Literal["text", "json"] = "text"
    identity_retention_days: float = 180
    collector_secret: SecretStr = SecretStr("")
    shopify_webhook_secret: SecretStr = SecretStr("")
    collector_ack_timeout_seconds: float = 10.0
    # Key of the hashes kept instead of IP addresses and user agents; empty keeps neither.
    pii_salt: SecretStr = SecretStr("")

    @model_validator(mode="after")
    def _insync_replicas_exist(self) -> Settings:
        # More in-sync replicas required than copies exist: Kafka would refuse every write.
        if self.min_insync_replicas > self.replication_factor:
            raise ValueError(
                f"min_insync_replicas ({self.min_insync_replicas}) exceeds replication_factor "
                f"({self.replication_factor}): every write would be refused"
            )
        return self

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        source = os.environ if environ is None else environ
        values = {
            name: source[ENV_PREFIX + name.upper()]
            for name in cls.model_fields
            if ENV_PREFIX + name.upper() in source
        }
        return cls.model_validate(values)

    @property
    def clickhouse(self) -> str:
        """The ClickHouse DSN; by default the embedded engine under the data dir."""
        return self.clickhouse_dsn or f"chdb://{self.data_dir.absolute() / 'clickhouse'}"

    @property
    def rules(self) -> Rules:
        return Rules(
            lookback=timedelta(days=self.lookback_days),
            half_life=timedelta(days=self.half_life_days),
            restatement_window=timedelta(days=self.restatement_window_days),
            refund_window=timedelta(days=self.refund_window_days),
            max_touchpoints=self.max_touchpoints,
            identity_retention=timedelta(days=self.identity_retention_days),
            allowed_lateness=timedelta(days=self.allowed_lateness_days),
            code_policy=self.code_policy,
            click_policy=self.click_policy,
            duplicate_click_window=timedelta(seconds=self.duplicate_click_window_seconds),
            click_burst_limit=self.click_burst_limit,
            click_burst_window=timedelta(seconds=self.click_burst_window_seconds),
            min_click_to_order=timedelta(seconds=self.min_click_to_order_seconds),
        )

    @property
    def pii_key(self) -> bytes:
        return self.pii_salt.get_secret_value().encode()

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}.{name}"

    @property
    def bootstrap_servers(self) -> str:
        return self.kafka_url.removeprefix("kafka://")

    def as_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in a child process."""
        env = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            env[ENV_PREFIX + name.upper()] = str(value)
        return env
