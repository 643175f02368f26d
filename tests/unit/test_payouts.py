"""Payout statements, periods that close and adjustments, against figures computed by hand."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attribution.payouts import (
    Credited,
    PayoutInputs,
    Period,
    Statement,
    StatementKey,
    allocate_lines,
    bonus_earned,
    close_due,
    first_due,
    open_statements,
    periods_to_close,
    value_before,
)
from schemas.catalog import CampaignRow, ContractRow

OCTOBER, NOVEMBER, DECEMBER = Period(2026, 10), Period(2026, 11), Period(2026, 12)
LOCK_DAYS = 30
# October's lock date: 2026-11-01 + 30 days.
OCTOBER_LOCK = datetime(2026, 12, 1, tzinfo=UTC)
NOVEMBER_LOCK = datetime(2026, 12, 31, tzinfo=UTC)


def campaign(campaign_id: str, currency: str, starts: str, ends: str) -> CampaignRow:
    return CampaignRow.model_validate(
        {
            "campaign_id": campaign_id,
            "name": campaign_id,
            "category": "fashion",
            "starts_at": starts,
            "ends_at": ends,
            "budget": "10000",
            "currency": currency,
        }
    )


SPRING = campaign("spring", "USD", "2026-10-05T00:00:00Z", "2026-11-20T23:59:59Z")
# anna: 2 posts at 400, a 250 retainer, 10% of last-click revenue, 500 once she has more
# than 2 last-click conversions.
ANNA_SPRING = ContractRow(
    influencer_id="anna",
    campaign_id="spring",
    fee_per_post=Decimal(400),
    posts=2,
    retainer=Decimal(250),
    commission_rate=Decimal("0.10"),
    bonus_amount=Decimal(500),
    bonus_metric="conversions",
    bonus_threshold=Decimal(2),
)


def credited(
    influencer: str,
    period: Period,
    revenue: str,
    conversions: str = "1",
    campaign_id: str = "spring",
    currency: str = "USD",
    model: str = "last_click",
) -> Credited:
    return Credited(
        influencer, campaign_id, model, currency, period, Decimal(revenue), Decimal(conversions)
    )


def inputs(
    credits: Sequence[Credited],
    contracts: Sequence[ContractRow] = (ANNA_SPRING,),
    campaigns: Sequence[CampaignRow] = (SPRING,),
) -> PayoutInputs:
    return PayoutInputs(
        contracts=contracts,
        campaigns={row.campaign_id: row for row in campaigns},
        credited=credits,
        clicks={},
    )


def lines(statement: Statement) -> list[tuple[str, str, Decimal]]:
    return [(line.campaign_id, line.kind, line.amount) for line in statement.lines]


def paid_by(closed: Sequence[Statement]) -> dict[StatementKey, Decimal]:
    paid: dict[StatementKey, Decimal] = {}
    for statement in closed:
        paid[statement.key] = paid.get(statement.key, Decimal(0)) + statement.total
    return paid


# 123.45 credited in October (2 conversions), 80.00 in November (1): 3 > 2 earns the bonus.
BEFORE_REFUND = [credited("anna", OCTOBER, "123.45", "2"), credited("anna", NOVEMBER, "80.00")]
# A 20.00 refund of an October order after October closed: its credit is restated.
AFTER_REFUND = [credited("anna", OCTOBER, "103.45", "2"), credited("anna", NOVEMBER, "80.00")]


def test_periods_are_utc_months_that_lock_a_set_number_of_days_after_their_end() -> None:
    assert Period.parse("2026-12").next() == Period(2027, 1)
    # 23:30 on Nov 30 in New York is already December in UTC.
    assert Period.containing(datetime.fromisoformat("2026-11-30T23:30:00-05:00")) == DECEMBER
    assert NOVEMBER.lock_date(LOCK_DAYS) == NOVEMBER_LOCK
    assert DECEMBER.lock_date(0) == datetime(2027, 1, 1, tzinfo=UTC)
    for name in ("2026-13", "2026-1", "26-11", "2026-11-01"):
        with pytest.raises(ValueError):
            Period.parse(name)


def test_a_period_closes_at_its_lock_date_not_a_second_earlier() -> None:
    just_before = datetime(2026, 11, 30, 23, 59, 59, tzinfo=UTC)
    assert periods_to_close(Period(2026, 9), None, just_before, LOCK_DAYS) == []
    assert periods_to_close(Period(2026, 9), None, OCTOBER_LOCK, LOCK_DAYS) == [OCTOBER]
    # Nothing closed yet: closing starts at the first period anything is due in.
    assert periods_to_close(None, OCTOBER, NOVEMBER_LOCK, LOCK_DAYS) == [OCTOBER, NOVEMBER]
    assert periods_to_close(None, None, NOVEMBER_LOCK, LOCK_DAYS) == []
    with pytest.raises(ValueError):
        periods_to_close(None, OCTOBER, datetime(2027, 1, 1), LOCK_DAYS)  # noqa: DTZ001


def test_fees_and_retainer_fall_in_the_first_month_commission_in_the_month_of_the_orders() -> None:
    [october] = open_statements(inputs(BEFORE_REFUND), OCTOBER, {}, None)
    # 10% of 123.45 = 12.345; 400 x 2 = 800; 250: total 1062.345 rounds half to even, 1062.34,
    # which the lines rounded down already make. The half cent is carried (next test).
    assert lines(october) == [
        ("spring", "commission", Decimal("12.34")),
        ("spring", "post_fees", Decimal("800.00")),
        ("spring", "retainer", Decimal("250.00")),
    ]
    assert october.total == Decimal("1062.34")
    assert october.lines[0].exact == Decimal("12.345")
    assert october.lines[0].commission_model == "last_click"
    assert not october.closed


def test_the_bonus_falls_in_the_month_the_campaign_ends() -> None:
    [november] = open_statements(inputs(BEFORE_REFUND), NOVEMBER, {}, None)
    # 10% of 80.00 = 8.00; 3 conversions > 2: the 500 bonus, due in November (ends Nov 20).
    assert lines(november) == [
        ("spring", "commission", Decimal("8.00")),
        ("spring", "bonus", Decimal("500.00")),
    ]
    assert open_statements(inputs(BEFORE_REFUND), DECEMBER, {}, None) == []


def test_a_refund_after_close_becomes_an_adjustment_of_the_next_period() -> None:
    [october_closing] = close_due(inputs(BEFORE_REFUND), {}, None, OCTOBER_LOCK, LOCK_DAYS)
    assert october_closing.period == OCTOBER
    [october] = october_closing.statements
    assert october.closed and october.total == Decimal("1062.34")

    restated = inputs(AFTER_REFUND)
    paid = paid_by([october])
    [november] = open_statements(restated, NOVEMBER, paid, OCTOBER)
    # October is now worth 10.345 + 800 + 250 = 1060.345 and paid 1062.34: adjustment -1.995.
    # Total 8 + 500 - 1.995 = 506.005 -> 506.00 (half to even); lines rounded down 8.00 +
    # 500.00 - 2.00 make it.
    assert lines(november) == [
        ("spring", "commission", Decimal("8.00")),
        ("spring", "bonus", Decimal("500.00")),
        ("", "adjustment", Decimal("-2.00")),
    ]
    assert november.lines[-1].exact == Decimal("-1.995")
    assert november.total == Decimal("506.00")
    # Closing November stores exactly what was shown; together the two statements pay the
    # current value 1568.345 rounded: 1062.34 + 506.00 = 1568.34.
    [november_closing] = close_due(restated, paid, OCTOBER, NOVEMBER_LOCK, LOCK_DAYS)
    assert november_closing.statements == [replace(november, closed=True)]
    assert october.total + november.total == Decimal("1568.34")
    # The half cent left (1568.345 - 1568.34) rounds to 0 on its own: December pays nothing.
    paid = paid_by([october, november])
    assert open_statements(restated, DECEMBER, paid, NOVEMBER) == []


def test_only_the_first_open_period_carries_the_adjustment() -> None:
    restated = inputs(AFTER_REFUND)
    paid = paid_by(
        close_due(inputs(BEFORE_REFUND), {}, None, OCTOBER_LOCK, LOCK_DAYS)[0].statements
    )
    [november] = open_statements(restated, NOVEMBER, paid, OCTOBER)
    assert november.lines[-1].kind == "adjustment"
    # December has nothing due: showing the adjustment there too would count it twice.
    assert open_statements(restated, DECEMBER, paid, OCTOBER) == []


def test_a_late_click_moves_a_closed_credit_between_influencers() -> None:
    bob_spring = ContractRow(
        influencer_id="bob", campaign_id="spring", commission_rate=Decimal("0.05")
    )
    anna_commission_only = ContractRow(
        influencer_id="anna", campaign_id="spring", commission_rate=Decimal("0.10")
    )
    contracts = (anna_commission_only, bob_spring)
    # A 100.00 October order is bob's last click until anna's later click arrives after close.
    before = [credited("bob", OCTOBER, "100.00")]
    [closing] = close_due(inputs(before, contracts), {}, None, OCTOBER_LOCK, LOCK_DAYS)
    assert [(s.influencer_id, s.total) for s in closing.statements] == [("bob", Decimal("5.00"))]

    after = inputs([credited("anna", OCTOBER, "100.00")], contracts)
    november = open_statements(after, NOVEMBER, paid_by(closing.statements), OCTOBER)
    # anna is owed 10% of 100.00 for October; bob was paid 5% of it and gives it back.
    assert [(s.influencer_id, lines(s)) for s in november] == [
        ("anna", [("", "adjustment", Decimal("10.00"))]),
        ("bob", [("", "adjustment", Decimal("-5.00"))]),
    ]


def test_credit_older_than_every_closed_period_is_paid_as_an_adjustment() -> None:
    # October and November closed; an order of September (backfilled late) credits anna 50.00.
    contract = ContractRow(influencer_id="anna", campaign_id="spring", commission_rate=Decimal(1))
    late = inputs([credited("anna", Period(2026, 9), "50.00")], (contract,))
    [december] = open_statements(late, DECEMBER, {}, NOVEMBER)
    assert lines(december) == [("", "adjustment", Decimal("50.00"))]
    assert close_due(late, {}, NOVEMBER, NOVEMBER_LOCK, LOCK_DAYS) == []


def test_yen_statements_have_no_minor_unit() -> None:
    tokyo = campaign("tokyo", "JPY", "2026-10-01T00:00:00+09:00", "2026-12-31T00:00:00+09:00")
    contract = ContractRow(
        influencer_id="kenji",
        campaign_id="tokyo",
        fee_per_post=Decimal(30000),
        posts=1,
        commission_rate=Decimal("0.075"),
    )
    # The campaign starts at midnight in Tokyo, still September in UTC: the fee is September's.
    yen = inputs(
        [credited("kenji", OCTOBER, "12345", campaign_id="tokyo", currency="JPY")],
        (contract,),
        (tokyo,),
    )
    [september] = open_statements(yen, Period(2026, 9), {}, None)
    assert lines(september) == [("tokyo", "post_fees", Decimal(30000))]
    [october] = open_statements(yen, OCTOBER, {}, None)
    # 7.5% of 12,345 yen = 925.875 -> 926 yen.
    assert lines(october) == [("tokyo", "commission", Decimal(926))]
    assert str(october.total) == "926"


def test_three_lines_share_the_rounded_total_by_largest_remainder() -> None:
    campaigns = [
        campaign(name, "USD", "2026-09-01T00:00:00Z", "2026-09-30T00:00:00Z") for name in "abc"
    ]
    contracts = [
        ContractRow(influencer_id="anna", campaign_id=name, commission_rate=Decimal("0.10"))
        for name in "abc"
    ]
    credits = [
        credited("anna", OCTOBER, revenue, campaign_id=name)
        for name, revenue in zip("abc", ("100.04", "200.03", "300.08"), strict=True)
    ]
    [october] = open_statements(inputs(credits, contracts, campaigns), OCTOBER, {}, None)
    # 10.004 + 20.003 + 30.008 = 60.015 -> 60.02; rounded down 10.00 + 20.00 + 30.00 = 60.00;
    # the two cents left go to the largest remainders, 0.8 (c) and 0.4 (a), not 0.3 (b).
    assert lines(october) == [
        ("a", "commission", Decimal("10.01")),
        ("b", "commission", Decimal("20.00")),
        ("c", "commission", Decimal("30.01")),
    ]
    assert october.total == Decimal("60.02")


def test_negative_lines_and_ties_round_to_a_total_the_lines_sum_to() -> None:
    # -0.005 + 0.005 + 0.015 = 0.015 -> 0.02; floors -0.01, 0.00, 0.01; remainders 0.5 each:
    # the two cents left go to the first two lines.
    amounts = [Decimal("-0.005"), Decimal("0.005"), Decimal("0.015")]
    assert allocate_lines(amounts, "USD") == [Decimal("0.00"), Decimal("0.01"), Decimal("0.01")]
    # Kuwaiti dinar, three decimals: 1.0015 + 2 = 3.0015 -> 3.002.
    assert allocate_lines([Decimal("1.0015"), Decimal("2")], "KWD") == [
        Decimal("1.002"),
        Decimal("2.000"),
    ]


def test_bonus_pays_only_above_its_threshold_under_the_commission_model() -> None:
    def earns(metric: str, threshold: str, clicks: int, conversions: str, revenue: str) -> bool:
        contract = ContractRow(
            influencer_id="anna",
            campaign_id="spring",
            bonus_amount=Decimal(100),
            bonus_metric=metric,
            bonus_threshold=Decimal(threshold),
        )
        return bonus_earned(contract, clicks, Decimal(conversions), Decimal(revenue))

    # 1 conversion in 3 clicks: 33.333333% (truncated) is above 33.333333 only if not truncated.
    assert not earns("conversion_rate", "33.333333", 3, "1", "0")
    assert earns("conversion_rate", "33.333332", 3, "1", "0")
    assert not earns("conversion_rate", "0", 0, "0", "0")  # no clicks: a rate of 0
    assert not earns("revenue", "500", 0, "0", "500.00")  # exceeds, not reaches
    assert earns("revenue", "500", 0, "0", "500.01")
    assert earns("clicks", "9", 10, "0", "0")
    assert not earns("followers", "0", 10, "1", "1")  # another metric never pays

    # Under the contract's model: position-based credits do not count for a last-click bonus.
    other_model = credited("anna", NOVEMBER, "1000.00", "5", model="position_based")
    assert open_statements(inputs([other_model]), NOVEMBER, {}, None) == []


MONTHS = [Period(2026, month) for month in range(9, 13)] + [Period(2027, 1), Period(2027, 2)]
cents = st.integers(min_value=0, max_value=10**7).map(lambda units: Decimal(units).scaleb(-2))
revision = st.tuples(st.sampled_from(["anna", "bob"]), st.sampled_from(MONTHS), cents)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.sampled_from([Decimal("0.10"), Decimal("0.075"), Decimal("0.333333")]),
    fee=cents,
    revisions=st.lists(st.lists(revision, max_size=4), min_size=len(MONTHS), max_size=len(MONTHS)),
)
def test_closed_statements_always_add_up_to_the_current_value(
    rate: Decimal, fee: Decimal, revisions: list[list[tuple[str, Period, Decimal]]]
) -> None:
    # Each month, credits of any month (closed ones too) are restated, then the month closes.
    contracts = [
        ContractRow(
            influencer_id=name,
            campaign_id="spring",
            commission_rate=rate,
            fee_per_post=fee,
            posts=1,
        )
        for name in ("anna", "bob")
    ]
    revenue: dict[tuple[str, Period], Decimal] = {}
    paid: dict[StatementKey, Decimal] = {}
    last_closed: Period | None = None
    for month, restated in zip(MONTHS, revisions, strict=True):
        revenue.update({(name, period): amount for name, period, amount in restated})
        now = inputs(
            [credited(name, period, str(amount)) for (name, period), amount in revenue.items()],
            contracts,
        )
        for closing in close_due(now, paid, last_closed, month.lock_date(LOCK_DAYS), LOCK_DAYS):
            for statement in closing.statements:
                paid[statement.key] = paid.get(statement.key, Decimal(0)) + statement.total
            last_closed = closing.period
        if last_closed is None:
            first = first_due(now)
            assert first is None or month < first  # nothing was due yet
            continue
        owed = value_before(now, last_closed.next())
        for key in owed.keys() | paid.keys():
            # What is left unpaid is never more than half a cent, either way.
            assert abs(owed.get(key, Decimal(0)) - paid.get(key, Decimal(0))) <= Decimal("0.005")
