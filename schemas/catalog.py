"""Catalog files (contract 3): CSVs validated row by row, errors naming file, line, field."""

from __future__ import annotations

import csv
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas.events import Currency, Id, Money, Timestamp
from schemas.fx_rates import RateFileError, parse_ecb_rates

FX_RATES_FILE = "fx_rates.csv"


class CatalogError(ValueError):
    def __init__(self, file: str, line: int, field: str, message: str) -> None:
        super().__init__(f"{file}:{line}: {field}: {message}")
        self.file, self.line, self.field, self.message = file, line, field, message


class _Row(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def identity(self) -> tuple[str, ...]:
        """What must be unique in its file (codes compare case-insensitively)."""
        return (str(getattr(self, next(iter(type(self).model_fields)))),)


class InfluencerRow(_Row):
    influencer_id: Id
    handle: Annotated[str, Field(max_length=256)]
    platform: Annotated[str, Field(min_length=1, max_length=64)]
    followers: Annotated[int, Field(ge=0)]


class CampaignRow(_Row):
    campaign_id: Id
    name: Annotated[str, Field(max_length=256)]
    category: Annotated[str, Field(min_length=1, max_length=64)]
    starts_at: Timestamp
    ends_at: Timestamp
    budget: Money
    currency: Currency
    # Optional column after the contract's seven: this campaign's codes follow this policy
    # instead of the program's (ATTRIBUTION_CODE_POLICY); empty follows the program.
    code_policy: Literal["", "code_as_last_touch", "code_wins", "link_wins"] = ""


class CodeRow(_Row):
    code: Annotated[str, Field(min_length=1, max_length=64)]
    influencer_id: Id
    campaign_id: Id
    # Optional fourth column: `if_involved` codes earn only when their owner also has a click in
    # the order's journey (programs that stop paying on leaked codes); `always` by default.
    credit_policy: Literal["always", "if_involved"] = "always"

    def identity(self) -> tuple[str, ...]:
        return (self.code.upper(),)


class LinkRow(_Row):
    link_id: Id
    influencer_id: Id
    campaign_id: Id


Rate = Annotated[Decimal, Field(ge=0, le=1)]
Amount = Annotated[Decimal, Field(ge=0)]


class ContractRow(_Row):
    influencer_id: Id
    campaign_id: Id
    fee_per_post: Amount = Decimal(0)
    posts: Annotated[int, Field(ge=0)] = 0
    retainer: Amount = Decimal(0)
    commission_rate: Rate = Decimal(0)
    bonus_amount: Amount = Decimal(0)
    bonus_metric: Annotated[str, Field(max_length=64)] = ""
    bonus_threshold: Amount = Decimal(0)
    # The model whose credited revenue the commission (and a revenue or conversion bonus) is
    # paid on; an optional column after the contract's nine.
    commission_model: Literal[
        "first_click", "last_click", "linear", "position_based", "time_decay"
    ] = "last_click"

    def identity(self) -> tuple[str, ...]:
        return (self.influencer_id, self.campaign_id)


CATALOG_FILES: dict[str, type[_Row]] = {
    "influencers.csv": InfluencerRow,
    "campaigns.csv": CampaignRow,
    "codes.csv": CodeRow,
    "links.csv": LinkRow,
    "contracts.csv": ContractRow,
}


class CatalogFiles(BaseModel):
    influencers: list[InfluencerRow] = []
    campaigns: list[CampaignRow] = []
    codes: list[CodeRow] = []
    links: list[LinkRow] = []
    contracts: list[ContractRow] = []
    fx_rates: dict[date, dict[str, Decimal]] = {}
    """Units per euro by publication date, from `fx_rates.csv` in the ECB's layout: added to
    (and on the same dates, replacing) the history the worker ships with."""


def _parse_file(path: Path, row_type: type[_Row]) -> list[Any]:
    rows = []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        expected = set(row_type.model_fields)
        missing = (
            expected
            - set(reader.fieldnames or [])
            - {name for name, info in row_type.model_fields.items() if not info.is_required()}
        )
        if missing:
            raise CatalogError(path.name, 1, ",".join(sorted(missing)), "missing column")
        first_line: dict[tuple[str, ...], int] = {}
        for line, record in enumerate(reader, start=2):
            values = {
                key: value for key, value in record.items() if key and value not in ("", None)
            }
            try:
                row = row_type.model_validate(values)
            except ValidationError as error:
                first = error.errors(include_url=False)[0]
                field = ".".join(str(part) for part in first["loc"])
                raise CatalogError(path.name, line, field, first["msg"]) from None
            key_field = next(iter(row_type.model_fields))
            if row.identity() in first_line:
                duplicate = f"duplicate of line {first_line[row.identity()]}"
                raise CatalogError(path.name, line, key_field, duplicate)
            first_line[row.identity()] = line
            rows.append(row)
    return rows


def read_catalog_dir(directory: Path) -> CatalogFiles:
    """Read every catalog CSV present in `directory`; raise `CatalogError` on the first bad cell."""
    if not directory.is_dir():
        raise CatalogError(str(directory), 0, "", "not a directory")
    parsed: dict[str, list[Any]] = {}
    for file_name, row_type in CATALOG_FILES.items():
        path = directory / file_name
        if path.exists():
            parsed[file_name.removesuffix(".csv")] = _parse_file(path, row_type)
    rates_path = directory / FX_RATES_FILE
    if rates_path.exists():
        try:
            fx_rates = parse_ecb_rates(rates_path.read_text(encoding="utf-8"))
        except RateFileError as error:
            raise CatalogError(FX_RATES_FILE, error.line, error.column, error.reason) from None
        return CatalogFiles.model_validate({**parsed, "fx_rates": fx_rates})
    return CatalogFiles.model_validate(parsed)
