"""Catalog files: errors name the file, line and field; tiers come from followers."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from attribution.catalog import tier_for
from attribution.fx import days_changed
from schemas.catalog import CatalogError, read_catalog_dir
from sinks.catalog_store import catalog_rows, exchange_rates

EXAMPLES = Path(__file__).parents[2] / "examples" / "catalog"


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(text)
    return directory


def error_of(directory: Path) -> CatalogError:
    with pytest.raises(CatalogError) as caught:
        read_catalog_dir(directory)
    return caught.value


def test_the_example_catalog_loads() -> None:
    files = read_catalog_dir(EXAMPLES)
    assert files.influencers and files.codes and files.campaigns


def test_a_bad_cell_names_file_line_and_field(tmp_path: Path) -> None:
    write(
        tmp_path,
        "influencers.csv",
        "influencer_id,handle,platform,followers\nanna,anna.styles,instagram,45000\n"
        "bob,bobcooks,tiktok,lots\n",
    )
    error = error_of(tmp_path)
    assert (error.file, error.line, error.field) == ("influencers.csv", 3, "followers")


def test_a_missing_column_and_a_bad_date_are_refused(tmp_path: Path) -> None:
    write(tmp_path / "a", "links.csv", "link_id,influencer_id\nl1,anna\n")
    assert error_of(tmp_path / "a").field == "campaign_id"
    write(
        tmp_path / "b",
        "campaigns.csv",
        "campaign_id,name,category,starts_at,ends_at,budget,currency\n"
        "spring,Spring,fashion,2026-03-01,2026-04-01T00:00:00Z,1000,USD\n",
    )
    error = error_of(tmp_path / "b")
    assert (error.line, error.field) == (2, "starts_at")


def test_duplicate_codes_differ_only_in_case(tmp_path: Path) -> None:
    write(
        tmp_path,
        "codes.csv",
        "code,influencer_id,campaign_id\nANNA10,anna,spring\nbob5,bob,spring\nanna10,bob,spring\n",
    )
    error = error_of(tmp_path)
    assert (error.file, error.line, error.field) == ("codes.csv", 4, "code")
    assert "line 2" in error.message


def test_tiers_follow_the_guide() -> None:
    # nano 1K-10K, micro 10K-100K, macro 100K-1M, mega 1M+ (under 1K reported as nano).
    assert [tier_for(n) for n in (500, 9_999, 10_000, 99_999, 100_000, 999_999, 1_000_000)] == [
        "nano",
        "nano",
        "micro",
        "micro",
        "macro",
        "macro",
        "mega",
    ]


def test_a_contract_names_its_commission_model_or_pays_on_last_click(tmp_path: Path) -> None:
    header = "influencer_id,campaign_id,commission_rate,commission_model\n"
    write(tmp_path / "ok", "contracts.csv", header + "anna,spring,0.10,linear\nbob,spring,0.05,\n")
    contracts = read_catalog_dir(tmp_path / "ok").contracts
    assert [c.commission_model for c in contracts] == ["linear", "last_click"]
    write(tmp_path / "bad", "contracts.csv", header + "anna,spring,0.10,last_touch\n")
    error = error_of(tmp_path / "bad")
    assert (error.file, error.line, error.field) == ("contracts.csv", 2, "commission_model")


def test_a_catalog_version_writes_the_unversioned_rates_of_the_days_that_changed() -> None:
    files = read_catalog_dir(EXAMPLES)
    loaded_at = datetime(2026, 6, 1, tzinfo=UTC)
    rates = exchange_rates(files, "EUR")
    every_day = catalog_rows(files, 2, loaded_at, rates)
    assert sum(row["table"] == "fx_rates" for row in every_day) > 100_000

    correcting = {**files.fx_rates, date(2026, 3, 2): {"USD": Decimal("1.0500")}}
    corrected = files.model_copy(update={"fx_rates": correcting})
    changed = days_changed(files.fx_rates, corrected.fx_rates)
    assert changed == {date(2026, 3, 2)}
    rows = catalog_rows(
        corrected, 3, loaded_at, exchange_rates(corrected, "EUR"), rates_published_on=changed
    )
    written = {
        (row["published_on"], row["currency"]): row["rate"]
        for row in rows
        if row["table"] == "fx_rates"
    }
    assert written.keys() == {
        (row["published_on"], row["currency"])
        for row in every_day
        if row["table"] == "fx_rates" and row["published_on"] == date(2026, 3, 2)
    }
    assert written[date(2026, 3, 2), "USD"] == Decimal("0.95238095238095238095")
    unchanged = catalog_rows(files, 3, loaded_at, rates, rates_published_on=set())
    assert Counter(row["table"] for row in unchanged) == Counter(
        row["table"] for row in every_day if row["table"] != "fx_rates"
    )
