"""`attribution scenario`: what a user sees change when the rules change, figures by hand; the
history split by identity component gives exactly the credits of one pipeline."""

from __future__ import annotations

import csv
import gc
import json
import random
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from attribution.models import ALL_MODELS, Model
from attribution.replay import LocalPipeline
from attribution.rules import ClickPolicy, CodePolicy, Rules
from attribution.scenario import (
    Contracts,
    Overrides,
    Tally,
    attribute,
    attribute_part,
    compare,
    split_by_identity,
)
from schemas.catalog import CampaignRow, ContractRow, read_catalog_dir
from schemas.events import validate_event
from simulation.storefront import Storefront
from streams.cli import main
from streams.scenario import PartTask, attribute_task
from tests.unit.helpers import CATALOG, at

PII_KEY = b"scenario-test-key"


def raw(kind: str, event_id: str, when: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "event_id": event_id, "occurred_at": when, **fields}


def utm(influencer: str) -> str:
    return f"https://shop.example/?utm_campaign=spring&utm_content={influencer}"


# Bob's click 20 days before a 100.00 order of customer c1 (on the device she orders from);
# customer c2 clicks Bob's link then orders 90.00 with Anna's code.
HISTORY = [
    raw("click", "k1", at(0), visitor_id="v1", url=utm("bob")),
    raw("order", "o1", at(20), order_id="o1", customer_id="c1", visitor_id="v1", currency="USD",
        total="100.00"),
    raw("click", "k2", at(21), visitor_id="v2", url=utm("bob")),
    raw("order", "o2", at(22), order_id="o2", customer_id="c2", visitor_id="v2", currency="USD",
        total="90.00"),
    raw("code_redemption", "r2", at(22), code="ANNA10", order_id="o2", customer_id="c2"),
]  # fmt: skip
CONTRACTS = Contracts(
    [
        ContractRow(influencer_id="bob", campaign_id="spring", commission_rate=Decimal("0.10")),
        ContractRow(
            influencer_id="anna",
            campaign_id="spring",
            retainer=Decimal("50"),
            commission_rate=Decimal("0.20"),
        ),
    ],
    {
        "spring": CampaignRow(
            campaign_id="spring",
            name="Spring",
            category="fashion",
            starts_at=datetime(2026, 3, 1, tzinfo=UTC),
            ends_at=datetime(2026, 4, 30, tzinfo=UTC),
            budget=Decimal("1000"),
            currency="USD",
        )
    },
)


TODAY = Rules(lookback=timedelta(days=14))


def figures(
    overrides: Overrides, today: Rules = TODAY
) -> dict[tuple[str, str], tuple[Decimal, Decimal, Decimal | None, Decimal]]:
    events = [validate_event(event) for event in HISTORY]
    _, before = attribute(events, CATALOG, today, b"")
    _, after = attribute(events, CATALOG, overrides.applied_to(today), b"")
    comparison = compare(before, after, "last_click", CONTRACTS)
    return {
        (row.level, row.id): (
            row.change("revenue") or Decimal(0),
            row.change("conversions") or Decimal(0),
            row.change("roas"),
            row.change("payout") or Decimal(0),
        )
        for row in comparison.rows
    }


def test_a_longer_lookback_credits_the_click_20_days_before_the_order() -> None:
    changes = figures(Overrides(lookback_days=30))
    # Today (14 days) o1 is unattributed; with 30 days Bob's click of day 0 takes its 100.00,
    # and 10% of it in commission. Anna keeps o2 (code last) and her 50 + 18.00.
    assert changes[("influencer", "bob")][:2] == (Decimal("100.00"), Decimal("1"))
    assert changes[("influencer", "bob")][3] == Decimal("10.00")
    assert changes[("influencer", "")][:2] == (Decimal("-100.00"), Decimal("-1"))
    assert changes[("influencer", "anna")] == (Decimal(0), Decimal(0), Decimal(0), Decimal(0))
    # The campaign gains Bob's 100.00 for 10.00 more payout: ROAS 90/68 = 1.3235 -> 190/78.
    assert changes[("campaign", "spring")][0] == Decimal("100.00")
    assert changes[("campaign", "spring")][2] == Decimal("2.4358") - Decimal("1.3235")


def test_every_amount_reads_in_the_minor_unit_and_a_zero_as_0_00() -> None:
    events = [validate_event(event) for event in HISTORY]
    _, before = attribute(events, CATALOG, TODAY, b"")
    _, after = attribute(events, CATALOG, Overrides(lookback_days=30).applied_to(TODAY), b"")
    # Bob has a contract but no credit today; only the scenario credits Bob's click.
    rows = compare(before, after, "last_click", CONTRACTS).rows
    bob = next(row for row in rows if row.id == "bob")
    assert [str(bob.today.revenue), str(bob.scenario.revenue), str(bob.change("revenue"))] == [
        "0.00",
        "100.00",
        "100.00",
    ]
    for row in rows:
        for side in (row.today, row.scenario):
            assert side.revenue.as_tuple().exponent == -2, row
            assert side.payout.as_tuple().exponent == -2, row
            assert side.conversions.as_tuple().exponent == -6, row


def test_link_wins_moves_the_code_order_to_the_link() -> None:
    changes = figures(Overrides(code_policy=CodePolicy.LINK_WINS))
    # o2 goes from Anna's code to Bob's click: 90.00 and 1 conversion; commissions 9.00 for Bob,
    # -18.00 for Anna (her 50 retainer stays), so Anna's ROAS goes from 90/68 = 1.3235 to
    # 0/50 = 0.
    assert changes[("influencer", "bob")] == (
        Decimal("90.00"),
        Decimal("1"),
        None,  # no ROAS without revenue before
        Decimal("9.00"),
    )
    assert changes[("influencer", "anna")][:2] == (Decimal("-90.00"), Decimal("-1"))
    assert changes[("influencer", "anna")][2] == Decimal("-1.3235")
    assert changes[("influencer", "anna")][3] == Decimal("-18.00")


def test_an_impossible_scenario_is_refused() -> None:
    with pytest.raises(ValueError, match="lookback must be more than 0 days"):
        Overrides(lookback_days=0)
    with pytest.raises(ValueError, match="unknown model 'markov'"):
        compare(attribute([], CATALOG, Rules(), b"")[1], attribute([], CATALOG, Rules(), b"")[1],
                "markov", CONTRACTS)  # fmt: skip


@pytest.fixture(scope="module")
def storefront_stream() -> tuple[Storefront, list[dict[str, Any]]]:
    store = Storefront(datetime(2026, 3, 1, tzinfo=UTC), seed=11)
    return store, store.events(1500) + store.fraud_events(datetime(2026, 3, 2, tzinfo=UTC))


def test_the_split_by_identity_gives_exactly_the_credits_of_one_pipeline(
    storefront_stream: tuple[Storefront, list[dict[str, Any]]],
) -> None:
    store, stream = storefront_stream
    rules = Rules()
    catalog = store.static_catalog()
    events = [validate_event(event) for event in stream]
    whole = LocalPipeline(catalog, rules, pii_key=PII_KEY)
    whole.feed_all(events)
    parts = split_by_identity(stream, 3, rules.traffic_reach)
    assert len(parts) == 3 and sorted(i for part in parts for i in part) == list(range(len(stream)))
    credits, orders = [], []
    for part in parts:
        pipeline = LocalPipeline(catalog, rules, pii_key=PII_KEY)
        pipeline.feed_all(events[index] for index in part)
        credits += pipeline.final_credits()
        orders += pipeline.final_orders()
    key = lambda row: (row.order_id, row.model, row.position)  # noqa: E731
    assert sorted(credits, key=key) == whole.final_credits()
    assert sorted(orders, key=lambda row: row.order_id) == whole.final_orders()


def test_the_cli_compares_with_all_processes_as_with_one_and_writes_csv_and_chart(
    storefront_stream: tuple[Storefront, list[dict[str, Any]]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    store, stream = storefront_stream
    history = tmp_path / "history.jsonl"
    history.write_text("\n".join(json.dumps(event) for event in stream) + "\nnot json\n")
    catalog = store.write_catalog(tmp_path / "catalog")
    monkeypatch.setenv("ATTRIBUTION_PII_SALT", PII_KEY.decode())
    common = ["scenario", "--history", str(history), "--catalog", str(catalog)]
    common += ["--lookback", "2", "--click-policy", "strict", "--model", "linear"]
    outputs = []
    for processes in ("1", "2"):
        out = tmp_path / f"comparison-{processes}.csv"
        chart = tmp_path / f"chart-{processes}.html"
        arguments = [*common, "--processes", processes, "--out", str(out), "--chart", str(chart)]
        assert main(arguments) == 0
        outputs.append((out.read_text(), chart.read_text()))
    assert outputs[0] == outputs[1]
    captured = capsys.readouterr()
    assert "today, scenario (lookback 2.0, click-policy strict) and the difference" in captured.out
    assert f"{history}:{len(stream) + 1}: not valid JSON" in captured.err
    rows = list(csv.DictReader(outputs[0][0].splitlines()))
    creator = next(row for row in rows if row["id"] == "inf-000")
    assert Decimal(creator["revenue_change"]) == Decimal(creator["scenario_revenue"]) - Decimal(
        creator["today_revenue"]
    )
    # Two of the lookback's 30 days: journeys of days lose clicks, so some revenue moves.
    assert any(Decimal(row["revenue_change"]) != 0 for row in rows)
    chart_html = outputs[0][1]
    assert chart_html.startswith("<!DOCTYPE html>") and "<svg" in chart_html
    assert "inf-000" in chart_html and "http" not in chart_html.replace(
        "http://www.w3.org/2000/svg", ""
    )


def test_a_lowercase_rfc_3339_click_stays_with_its_address_when_split() -> None:
    # The schema reads "2026-03-01t10:05:00z" (RFC 3339 allows lowercase t and z). The second
    # click from 1.2.3.4 for Bob within the hour is a duplicate in one pipeline, so o2 (its
    # visitor's order) is unattributed; were it cut from the first click's part, it would be a
    # valid click there and credit o2 to Bob.
    stream = [
        raw("click", "k1", "2026-03-01T10:00:00Z", visitor_id="v1", ip="1.2.3.4",
            user_agent="Mozilla/5.0", url=utm("bob")),
        raw("click", "k2", "2026-03-01t10:05:00z", visitor_id="v2", ip="1.2.3.4",
            user_agent="Mozilla/5.0", url=utm("bob")),
        raw("order", "o2", "2026-03-01T10:30:00Z", order_id="o2", customer_id="c2",
            visitor_id="v2", currency="USD", total="90.00"),
    ]  # fmt: skip
    rules = Rules()
    events = [validate_event(event) for event in stream]
    whole = LocalPipeline(CATALOG, rules, pii_key=PII_KEY)
    whole.feed_all(events)
    o2_credit = {row.influencer_id for row in whole.final_credits() if row.order_id == "o2"}
    assert o2_credit == {""}
    parts = split_by_identity(stream, 3, rules.traffic_reach)
    assert parts == [[0, 1, 2]]
    part = LocalPipeline(CATALOG, rules, pii_key=PII_KEY)
    part.feed_all(events[index] for index in parts[0])
    assert part.final_credits() == whole.final_credits()


def _rfc3339(moment: datetime, offset_minutes: int, micro: bool, zulu: bool) -> str:
    local = moment.astimezone(timezone(timedelta(minutes=offset_minutes)))
    text = local.isoformat(timespec="microseconds" if micro else "seconds")
    return text.replace("+00:00", "Z") if zulu else text


@settings(max_examples=200, deadline=None)
@given(
    first=st.datetimes(  # hypothesis bounds naive times, then gives them the zone
        min_value=datetime(1971, 1, 1),  # noqa: DTZ001
        max_value=datetime(2199, 1, 1),  # noqa: DTZ001
        timezones=st.just(UTC),
    ),
    apart=st.sampled_from([timedelta(0), timedelta(microseconds=1), timedelta(seconds=1)]),
    offsets=st.tuples(*[st.integers(-14 * 60, 14 * 60)] * 2),
    micro=st.booleans(),
    zulu=st.booleans(),
)
def test_clicks_are_grouped_by_the_times_the_schema_reads_however_they_are_written(
    first: datetime,
    apart: timedelta,
    offsets: tuple[int, int],
    micro: bool,
    zulu: bool,
) -> None:
    # Two clicks from one address at the edge of the traffic rules' reach, each written with its
    # own offset: one part exactly when the schema's readings are no further apart than the reach.
    reach = Rules().traffic_reach
    if not micro:
        first = first.replace(microsecond=0)
        apart = max(apart, timedelta(seconds=1)) if apart else apart
    second = first + reach + apart
    clicks = [
        raw("click", f"k{index}", _rfc3339(moment, offset, micro, zulu), visitor_id=f"v{index}",
            ip="1.2.3.4", url=utm("bob"))
        for index, (moment, offset) in enumerate(zip((first, second), offsets, strict=True))
    ]  # fmt: skip
    read = [validate_event(click).occurred_at for click in clicks]
    together = read[1] - read[0] <= reach
    assert (split_by_identity(clicks, 2, reach) == [[0, 1]]) == together


def test_impossible_options_are_one_line_errors_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    history = tmp_path / "history.jsonl"
    history.write_text("")
    with pytest.raises(SystemExit) as exit_info:
        main(["scenario", "--history", str(history), "--lookback", "1e12"])
    assert exit_info.value.code == 2
    assert "argument --lookback: too many days: '1e12'" in capsys.readouterr().err
    missing = tmp_path / "no-such-directory" / "out.csv"
    assert main(["scenario", "--history", str(history), "--out", str(missing)]) == 2
    assert capsys.readouterr().err == (f"--out {missing}: no directory {missing.parent}\n")


@pytest.fixture(scope="module")
def year_of_shoppers() -> tuple[Storefront, list[dict[str, Any]]]:
    """A year of repeat buyers (journeys longer than the order retention, so journeys forget
    orders), sparse customers with orders weeks apart and late refunds, a click farm, events
    up to 3 days late and some delivered anywhere later (past the allowed lateness)."""
    store = Storefront(
        datetime(2026, 1, 1, tzinfo=UTC), seed=5, returning_share=0.4, sparse_share=0.15
    )
    stream = store.events(1200, spread=timedelta(days=365))
    stream += store.fraud_events(datetime(2026, 6, 1, tzinfo=UTC))
    shuffle = random.Random(5)
    for _ in range(60):
        early = shuffle.randrange(len(stream) - 1)
        stream.insert(shuffle.randrange(early + 1, len(stream)), stream.pop(early))
    return store, stream


@pytest.mark.parametrize(
    "overrides",
    [
        Overrides(),
        Overrides(lookback_days=2, click_policy=ClickPolicy.STRICT),
        Overrides(lookback_days=60, half_life_days=1.5, code_policy=CodePolicy.LINK_WINS),
        Overrides(code_policy=CodePolicy.CODE_WINS, click_policy=ClickPolicy.RELAXED),
    ],
)
# Without a key no address is kept: clicks are classified as they are routed, not by the
# traffic stage, and must still count for click bonuses.
@pytest.mark.parametrize("pii_key", [PII_KEY, b""], ids=["keyed", "no key"])
def test_crediting_once_over_shared_stages_gives_exactly_the_pipelines_tallies(
    year_of_shoppers: tuple[Storefront, list[dict[str, Any]]], overrides: Overrides, pii_key: bytes
) -> None:
    store, stream = year_of_shoppers
    catalog = store.static_catalog()
    events = [validate_event(event) for event in stream]
    today = Rules()
    scenario = overrides.applied_to(today)
    straightforward = attribute_part(events, catalog, today, scenario, pii_key, keep_rows=True)
    assert straightforward.rejected_events and straightforward.late_events
    for models in (set(ALL_MODELS), {Model.LAST_CLICK, Model.TIME_DECAY}):
        fast = attribute_part(events, catalog, today, scenario, pii_key, models=models)
        for side in ("today", "scenario"):
            expected: Tally = getattr(straightforward, side)
            credited = {key: value for key, value in expected.credited.items() if key[0] in models}
            assert getattr(fast, side).credited == credited
            assert getattr(fast, side).valid_clicks == expected.valid_clicks
            assert expected.valid_clicks
            assert getattr(fast, side).orders_without_rate == expected.orders_without_rate
        assert fast.rejected_events == straightforward.rejected_events
        assert fast.late_events == straightforward.late_events


@pytest.mark.parametrize("keep_rows", [False, True], ids=["tallies", "rows to restate"])
def test_a_part_runs_without_the_cyclic_collector_and_leaves_no_cycles_behind(
    year_of_shoppers: tuple[Storefront, list[dict[str, Any]]], keep_rows: bool, tmp_path: Path
) -> None:
    """The collector is paused while a part is attributed (streams.heap), which is only safe
    while the pipeline makes no reference cycles: their memory would wait for the collector's
    next run after it."""
    store, stream = year_of_shoppers
    lines = [
        (f"history:{number}", json.dumps(event).encode()) for number, event in enumerate(stream)
    ]
    lines.append(("history:invalid", b'{"type": "order", "event_id": "o-without-fields"}'))
    today = Rules()
    task = PartTask(
        lines,
        read_catalog_dir(store.write_catalog(tmp_path / "catalog")),
        "USD",
        {},
        today,
        Overrides(lookback_days=60, code_policy=CodePolicy.LINK_WINS).applied_to(today),
        PII_KEY,
        keep_rows,
        frozenset(ALL_MODELS),
    )
    collections: list[tuple[int, int]] = []

    def record(phase: str, info: dict[str, int]) -> None:
        if phase == "stop":
            collections.append((info["generation"], info["collected"]))

    # Earlier tests may have frozen garbage of their own (a command run in this process).
    gc.unfreeze()
    gc.collect()
    gc.callbacks.append(record)
    try:
        outcome, invalid = attribute_task(task)
    finally:
        gc.callbacks.remove(record)
    assert gc.isenabled()
    assert outcome.scenario.credited and outcome.today.credited != outcome.scenario.credited
    assert len(invalid) == 1 and (outcome.final_rows != []) == keep_rows
    # The pause's own collection before the work (nothing to free: the test just collected),
    # and none while the part was attributed.
    assert collections == [(2, 0)]
    # What the part built was frozen; a full collection of it finds no cycle to free.
    gc.unfreeze()
    assert gc.collect() == 0
