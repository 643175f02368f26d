"""Result rows the pipeline emits for ClickHouse, and notices for dead letters and metrics."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from datetime import date, datetime
from decimal import Decimal
from operator import attrgetter
from typing import Any, ClassVar, NamedTuple

from attribution.values import immutable

# Per row class: its column names, and a getter of its values in that order (built once).
_LAYOUTS: dict[type, tuple[tuple[str, ...], attrgetter[Any]]] = {}


def _layout(row_class: type) -> tuple[tuple[str, ...], attrgetter[Any]]:
    layout = _LAYOUTS.get(row_class)
    if layout is None:
        names = tuple(column.name for column in fields(row_class))
        layout = _LAYOUTS[row_class] = (names, attrgetter(*names))
    return layout


@immutable
class _Row:
    table: ClassVar[str]

    @classmethod
    def columns(cls) -> tuple[str, ...]:
        """The row's column names, in the order `values` gives them."""
        return _layout(cls)[0]

    def values(self) -> tuple[Any, ...]:
        """The row's values, native (decimals, times), in the order of `columns`."""
        values: tuple[Any, ...] = _layout(type(self))[1](self)
        return values

    def to_wire(self) -> dict[str, Any]:
        record: dict[str, Any] = {"table": self.table}
        for column in fields(self):
            value = getattr(self, column.name)
            if isinstance(value, date):  # datetimes too
                value = value.isoformat()
            elif isinstance(value, Decimal):
                value = str(value)
            record[column.name] = value
        return record


@immutable
class CreditRow(_Row):
    """One order x model x touchpoint; the latest `version` of a key is the truth,
    and `is_deleted` retracts a key a restatement no longer credits."""

    table: ClassVar[str] = "credits"

    order_id: str
    model: str
    touchpoint_event_id: str
    touchpoint_type: str
    touchpoint_at: datetime | None
    position: int
    touchpoints: int
    influencer_id: str
    campaign_id: str
    platform: str
    tier: str
    credit: Decimal
    revenue_credit: Decimal
    currency: str
    order_at: datetime
    customer_id: str
    version: int
    is_deleted: bool
    code_policy: str
    """The code policy that decided the row (attribution.rules.CodePolicy); '' on retractions."""
    # The revenue credit in the reporting currency at the order's locked rate (section "many
    # currencies" of docs/attribution.md); currency '' and amounts 0 while no rate is published.
    reporting_currency: str
    reporting_revenue_credit: Decimal
    fx_rate: Decimal
    fx_rate_date: date | None
    touchpoint_flags: tuple[str, ...] = ()
    """Why the credited click is suspicious (or, under the relaxed policy, invalid) for this
    order: flagged for review (attribution.traffic)."""


@immutable
class OrderRow(_Row):
    table: ClassVar[str] = "orders"

    order_id: str
    customer_id: str
    order_at: datetime
    currency: str
    total: Decimal
    refunded: Decimal
    net_revenue: Decimal
    touchpoints: int
    version: int
    reporting_currency: str
    reporting_total: Decimal
    reporting_refunded: Decimal
    reporting_net_revenue: Decimal
    fx_rate: Decimal
    fx_rate_date: date | None


@immutable
class OrderItemRow(_Row):
    """A line of an order as the storefront sent it (`line` counts from 1)."""

    table: ClassVar[str] = "order_items"

    order_id: str
    line: int
    order_at: datetime
    sku: str
    category: str
    quantity: int
    unit_price: Decimal
    currency: str


@immutable
class RefundRow(_Row):
    """A refund and the ledger's decision on it; the highest `version` of a refund is the
    decision in force (an accepted refund is refused when an earlier one arrives late)."""

    table: ClassVar[str] = "refund_decisions"

    event_id: str
    order_id: str
    refunded_at: datetime
    amount: Decimal
    currency: str
    reason: str
    status: str
    version: int


@immutable
class ClickRow(_Row):
    """Every click, influencer touchpoint or plain traffic (`influencer_id` empty)."""

    table: ClassVar[str] = "clicks"

    event_id: str
    occurred_at: datetime
    visitor_id: str
    customer_id: str
    influencer_id: str
    campaign_id: str
    platform: str
    tier: str
    link_id: str
    url: str
    # Keyed hashes (see `attribution.privacy`), '' when absent or when no key is configured.
    ip_hash: str = ""
    user_agent_hash: str = ""


@immutable
class ClickClassificationRow(_Row):
    """An influencer click's classification (attribution.traffic); the highest `version` of a
    click is in force (a late click may reclassify its neighbours)."""

    table: ClassVar[str] = "click_classifications"

    event_id: str
    occurred_at: datetime
    influencer_id: str
    campaign_id: str
    status: str
    reasons: tuple[str, ...]
    rule_version: int
    version: int


@immutable
class CodeRedemptionRow(_Row):
    table: ClassVar[str] = "code_redemptions"

    event_id: str
    occurred_at: datetime
    code: str
    order_id: str
    customer_id: str
    influencer_id: str
    campaign_id: str
    known_code: bool


@immutable
class IdentityRow(_Row):
    table: ClassVar[str] = "identity_links"

    event_id: str
    occurred_at: datetime
    visitor_id: str
    customer_id: str


@immutable
class ContentMetricsRow(_Row):
    table: ClassVar[str] = "content_metrics"

    event_id: str
    occurred_at: datetime
    influencer_id: str
    post_id: str
    platform: str
    campaign_id: str
    impressions: int
    reach: int
    likes: int
    comments: int
    shares: int
    saves: int
    followers: int


@immutable
class Rejection:
    """An event the pipeline refused after validation (e.g. an over-refund): a dead letter."""

    event_id: str
    field: str
    reason: str
    payload: dict[str, Any]


@immutable
class IdentityLinked:
    """A visitor linked to a customer for the first time: its journey merges into theirs."""

    visitor_id: str
    customer_id: str


@immutable
class IdentityConflict:
    """A later link of a visitor to another customer: counted and ignored (contract 2.5)."""

    visitor_id: str
    kept_customer_id: str
    ignored_customer_id: str


@immutable
class CustomerErased(_Row):
    """To the sink: rewrite the customer's stored rows to `pseudonym` and drop their visitors'
    ids and device hashes. Only the pseudonym and the time are recorded."""

    table: ClassVar[str] = "erasures"

    customer_id: str
    pseudonym: str
    visitor_ids: tuple[str, ...]


Row = (
    CreditRow
    | OrderRow
    | OrderItemRow
    | RefundRow
    | ClickRow
    | ClickClassificationRow
    | CodeRedemptionRow
    | IdentityRow
    | ContentMetricsRow
    | CustomerErased
)


class RowBlock(NamedTuple):
    """Rows of one table as the `rows` topic carries them and the sink inserts them: the column
    names once, then each row's values in that order."""

    table: str
    columns: tuple[str, ...]
    rows: list[Sequence[Any]]


ERASURES = CustomerErased.table


def row_blocks(rows: Iterable[Row]) -> list[RowBlock]:
    """`rows` as one block per table, in the order the tables first appear; an erasure applies
    between the rows before it and those after it, so it splits the blocks there."""
    blocks: list[RowBlock] = []
    open_blocks: dict[type[_Row], RowBlock] = {}
    for row in rows:
        row_class = type(row)
        block = open_blocks.get(row_class)
        if block is None:
            block = RowBlock(row_class.table, row_class.columns(), [])
            blocks.append(block)
            open_blocks[row_class] = block
        block.rows.append(row.values())
        if row_class is CustomerErased:
            open_blocks = {}
    return blocks


def wire_row_blocks(rows: Iterable[Mapping[str, Any]]) -> list[RowBlock]:
    """Rows as dicts (`to_wire`, the `rows` topic's records before session 13) as blocks, a
    block per row."""
    return [
        RowBlock(
            row["table"],
            tuple(name for name in row if name != "table"),
            [tuple(value for name, value in row.items() if name != "table")],
        )
        for row in rows
    ]
