"""What the core needs to know of the catalog, and how a click or code finds its influencer."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import date
from functools import lru_cache
from typing import Protocol
from urllib.parse import parse_qs, urlsplit

from attribution.fx import DEFAULT_REPORTING_CURRENCY, ExchangeRates, LockedRate
from attribution.values import immutable

NANO_MIN_FOLLOWERS = 1_000
MICRO_MIN_FOLLOWERS = 10_000
MACRO_MIN_FOLLOWERS = 100_000
MEGA_MIN_FOLLOWERS = 1_000_000
UNKNOWN_TIER = "unknown"


def tier_for(followers: int) -> str:
    """The contract's tiers; accounts under 1K followers are reported with the nano tier.

    >>> [tier_for(n) for n in (500, 5_000, 50_000, 500_000, 5_000_000)]
    ['nano', 'nano', 'micro', 'macro', 'mega']
    """
    if followers >= MEGA_MIN_FOLLOWERS:
        return "mega"
    if followers >= MACRO_MIN_FOLLOWERS:
        return "macro"
    if followers >= MICRO_MIN_FOLLOWERS:
        return "micro"
    return "nano"


@immutable
class InfluencerProfile:
    influencer_id: str
    handle: str
    platform: str
    followers: int

    @property
    def tier(self) -> str:
        return tier_for(self.followers)


@immutable
class CreditTarget:
    """Who a promo code or a tracked link credits."""

    influencer_id: str
    campaign_id: str
    requires_click: bool = False
    """A code that earns only when its owner also has a click in the journey (`if_involved`)."""


class Catalog(Protocol):
    """Read access to the catalog (contract section 3); codes are looked up case-insensitively.

    >>> catalog = StaticCatalog(codes={"ANNA10": CreditTarget("anna", "spring")})
    >>> catalog.code("anna10")
    CreditTarget(influencer_id='anna', campaign_id='spring', requires_click=False)
    """

    def influencer(self, influencer_id: str) -> InfluencerProfile | None: ...

    def link(self, link_id: str) -> CreditTarget | None: ...

    def code(self, code: str) -> CreditTarget | None: ...

    def code_policy(self, campaign_id: str) -> str:
        """The campaign's own code policy, '' when it follows the program's."""
        ...

    def exchange_rate(self, currency: str, day: date) -> LockedRate | None:
        """The rate an order of `day` in `currency` is reported at (None: not published yet)."""
        ...


@dataclass(frozen=True)
class StaticCatalog:
    """A catalog held in memory; `codes` keys are stored upper-case."""

    influencers: dict[str, InfluencerProfile] = field(default_factory=dict)
    links: dict[str, CreditTarget] = field(default_factory=dict)
    codes: dict[str, CreditTarget] = field(default_factory=dict)
    code_policies: dict[str, str] = field(default_factory=dict)
    """Campaign id -> code policy, for campaigns that override the program's."""
    exchange_rates: ExchangeRates = field(
        default_factory=lambda: ExchangeRates(DEFAULT_REPORTING_CURRENCY, {})
    )

    def influencer(self, influencer_id: str) -> InfluencerProfile | None:
        return self.influencers.get(influencer_id)

    def link(self, link_id: str) -> CreditTarget | None:
        return self.links.get(link_id)

    def code(self, code: str) -> CreditTarget | None:
        return self.codes.get(code.upper())

    def code_policy(self, campaign_id: str) -> str:
        return self.code_policies.get(campaign_id, "")

    def exchange_rate(self, currency: str, day: date) -> LockedRate | None:
        return self.exchange_rates.lock(currency, day)


@immutable
class ResolvedInfluencer:
    influencer_id: str
    campaign_id: str
    platform: str
    tier: str
    requires_click: bool = False


# Clicks on one tracked link share its URL, so the parse is kept for the URLs seen last (a URL
# with a per-click id in it simply misses).
@lru_cache(maxsize=4096)
def _utm_target(url: str) -> tuple[str, str, str] | None:
    try:
        query = parse_qs(urlsplit(url).query)
    except ValueError:
        return None
    influencer = query.get("utm_content", [""])[0]
    if not influencer:
        return None
    return influencer, query.get("utm_campaign", [""])[0], query.get("utm_source", [""])[0]


def resolve_click(
    catalog: Catalog,
    *,
    url: str,
    influencer_id: str | None,
    campaign_id: str | None,
    link_id: str | None,
    platform: str | None,
) -> ResolvedInfluencer | None:
    """Contract 2.1: the click's influencer id, else its tracked link, else the URL's UTM tags."""
    utm_platform = ""
    if influencer_id:
        resolved_influencer, resolved_campaign = influencer_id, campaign_id or ""
    elif link_id and (target := catalog.link(link_id)) is not None:
        resolved_influencer, resolved_campaign = target.influencer_id, target.campaign_id
    elif (utm := _utm_target(url)) is not None:
        resolved_influencer, resolved_campaign, utm_platform = utm
    else:
        return None
    return _with_profile(catalog, resolved_influencer, resolved_campaign, platform or utm_platform)


def resolve_code(catalog: Catalog, code: str) -> ResolvedInfluencer | None:
    target = catalog.code(code)
    if target is None:
        return None
    resolved = _with_profile(catalog, target.influencer_id, target.campaign_id, "")
    return replace(resolved, requires_click=target.requires_click)


def _with_profile(
    catalog: Catalog, influencer_id: str, campaign_id: str, platform: str
) -> ResolvedInfluencer:
    profile = catalog.influencer(influencer_id)
    if profile is None:
        return ResolvedInfluencer(influencer_id, campaign_id, platform, UNKNOWN_TIER)
    return ResolvedInfluencer(
        influencer_id, campaign_id, platform or profile.platform, profile.tier
    )
