"""The traffic stage: the influencer clicks of one IP address, classified against each other.

Every click is kept and classified, never deleted: `valid`, `suspicious` (credited, flagged for
review) or `invalid` (never credited under the default policy), with its reasons. Reasons that
need only the click itself are found when it is routed (`event_flags`); the ones that compare it
with the other clicks of its IP address are found here, keyed by the keyed hash of the address:

- `duplicate_click`: the same IP, user agent and influencer clicked less than
  `Rules.duplicate_click_window` before: the click counts once.
- `click_burst`: more than `Rules.click_burst_limit` clicks from the IP on one influencer within
  `Rules.click_burst_window`.

A classification is a function of the clicks alone, never of their arrival order: a click that
arrives late reclassifies its neighbours, whose new flags travel the click's own way (visitor,
then journey) and restate the orders they were credited to.

Both rules are per influencer, so the stage is keyed by address and influencer
(`attribution.messages.traffic_key`), and a key keeps at most `MAX_CLICKS_KEPT` clicks: one
address cannot grow a state (a changelog record) without bound.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import lru_cache

import crawleruseragents

from attribution.messages import (
    ForgetClickOwners,
    Touchpoint,
    TrafficCommand,
    VisitorClick,
    Wire,
    traffic_key,
)
from attribution.rows import ClickClassificationRow
from attribution.rules import ClickPolicy, Rules, same_day

RULES_VERSION = 1
MAX_CLICKS_KEPT = 1000
"""Clicks kept per address and influencer: the oldest beyond it are forgotten early. More
clicks than this on one creator from one address within the allowed lateness is a bot's
traffic, whose clicks the burst rule has flagged already."""
"""Bumped whenever a rule's definition (not its thresholds, which are settings) changes."""
VALID, SUSPICIOUS, INVALID = "valid", "suspicious", "invalid"
KNOWN_CRAWLER = "known_crawler"
EMPTY_USER_AGENT = "empty_user_agent"
DUPLICATE_CLICK = "duplicate_click"
CLICK_BURST = "click_burst"
TOO_FAST_TO_ORDER = "too_fast_to_order"
SUSPICIOUS_REASONS = frozenset({EMPTY_USER_AGENT})
"""Every other reason makes a click invalid."""

TrafficOutput = VisitorClick | ClickClassificationRow


def merged_flags(held: tuple[str, ...], arrived: tuple[str, ...]) -> tuple[str, ...]:
    """Two copies' reasons of one click, as the newest copy has them: adding clicks to its
    address never takes a reason away, so the newest copy's are the union."""
    return held if set(arrived) <= set(held) else tuple(sorted({*held, *arrived}))


def status_of(flags: Iterable[str]) -> str:
    """`invalid` if any reason is, else `suspicious` if any, else `valid`.

    >>> status_of(()), status_of([EMPTY_USER_AGENT]), status_of([EMPTY_USER_AGENT, CLICK_BURST])
    ('valid', 'suspicious', 'invalid')
    """
    reasons = set(flags)
    if reasons - SUSPICIOUS_REASONS:
        return INVALID
    return SUSPICIOUS if reasons else VALID


def earns(flags: tuple[str, ...], policy: ClickPolicy) -> bool:
    """Whether a click with these reasons may be credited under the policy."""
    if not flags or policy is ClickPolicy.RELAXED:
        return True
    status = status_of(flags)
    return status == VALID or (status == SUSPICIOUS and policy is ClickPolicy.MODERATE)


@lru_cache(maxsize=4096)
def _is_crawler(user_agent: str) -> bool:
    # The list's one big expression costs ~0.2 ms a user agent; traffic repeats a few of them.
    return bool(crawleruseragents.is_crawler(user_agent))


def event_flags(user_agent: str | None) -> tuple[str, ...]:
    """The reasons a click's own user agent gives (the `crawler-user-agents` list). A storefront
    that does not send user agents (`None`) is not suspected; a blank one is.

    >>> event_flags(None), event_flags(" "), event_flags("Mozilla/5.0 (compatible; Googlebot/2.1)")
    ((), ('empty_user_agent',), ('known_crawler',))
    """
    if user_agent is None:
        return ()
    if not user_agent.strip():
        return (EMPTY_USER_AGENT,)
    return (KNOWN_CRAWLER,) if _is_crawler(user_agent) else ()


@dataclass(slots=True)
class ScreenedClick:
    touchpoint: Touchpoint
    """As routed, with the click's own reasons in `flags`."""
    user_agent_hash: str
    flags: tuple[str, ...] = ()
    """Its own reasons and those the other clicks of the IP give, sorted."""
    version: int = 0
    """How many times its classification changed (the row's version)."""


@dataclass(slots=True)
class Traffic:
    key: str
    """The address's keyed hash and the influencer (`traffic_key`)."""
    clicks: dict[str, ScreenedClick] = field(default_factory=dict)
    newest_event_at: datetime | None = None


def _in_time_order(clicks: Iterable[ScreenedClick]) -> list[ScreenedClick]:
    return sorted(
        clicks, key=lambda click: (click.touchpoint.occurred_at, click.touchpoint.event_id)
    )


def _duplicates(clicks: Sequence[ScreenedClick], window: timedelta) -> set[str]:
    """Clicks less than `window` after the previous click of their user agent and influencer."""
    previous: dict[tuple[str, str], datetime] = {}
    found: set[str] = set()
    for click in clicks:
        key = (click.user_agent_hash, click.touchpoint.influencer_id)
        moment = click.touchpoint.occurred_at
        if key in previous and moment - previous[key] < window:
            found.add(click.touchpoint.event_id)
        previous[key] = moment
    return found


def _bursts(clicks: Sequence[ScreenedClick], limit: int, window: timedelta) -> set[str]:
    """Clicks inside a `window` that holds more than `limit` clicks on their influencer."""
    by_influencer: dict[str, list[ScreenedClick]] = defaultdict(list)
    for click in clicks:
        by_influencer[click.touchpoint.influencer_id].append(click)
    found: set[str] = set()
    for group in by_influencer.values():
        times = [click.touchpoint.occurred_at for click in group]
        end = 0
        for start, first in enumerate(times):
            end = max(end, start)
            while end + 1 < len(times) and times[end + 1] - first <= window:
                end += 1
            if end - start + 1 > limit:
                found.update(click.touchpoint.event_id for click in group[start : end + 1])
    return found


def classify(clicks: Iterable[ScreenedClick], rules: Rules) -> dict[str, tuple[str, ...]]:
    """Every click's reasons, its own and those of the others: a function of the set alone."""
    ordered = _in_time_order(clicks)
    duplicates = _duplicates(ordered, rules.duplicate_click_window)
    bursts = _bursts(ordered, rules.click_burst_limit, rules.click_burst_window)
    flags = {}
    for click in ordered:
        event_id = click.touchpoint.event_id
        reasons = set(click.touchpoint.flags)
        if event_id in duplicates:
            reasons.add(DUPLICATE_CLICK)
        if event_id in bursts:
            reasons.add(CLICK_BURST)
        flags[event_id] = tuple(sorted(reasons))
    return flags


def classification_row(touchpoint: Touchpoint, version: int) -> ClickClassificationRow:
    return ClickClassificationRow(
        touchpoint.event_id,
        touchpoint.occurred_at,
        touchpoint.influencer_id,
        touchpoint.campaign_id,
        status_of(touchpoint.flags),
        touchpoint.flags,
        RULES_VERSION,
        version,
    )


def _forward(click: ScreenedClick) -> list[TrafficOutput]:
    """The click to its visitor with its flags, and its classification row. An erased
    customer's click has no visitor any more: only its row goes out."""
    touchpoint = click.touchpoint
    if touchpoint.flags != click.flags:
        # Most clicks have no reason but their own: the copy (slow for a dataclass) is skipped.
        touchpoint = replace(touchpoint, flags=click.flags)
    row = classification_row(touchpoint, click.version)
    if not touchpoint.visitor_id:
        return [row]
    return [VisitorClick(touchpoint.visitor_id, touchpoint), row]


def forget_owners(traffic: Traffic, event_ids: Iterable[str]) -> None:
    """An erasure: these clicks stay (they still classify their neighbours), without the ids
    of the visitor and customer they came from."""
    for event_id in event_ids:
        click = traffic.clicks.get(event_id)
        if click is not None:
            click.touchpoint = replace(click.touchpoint, visitor_id="", customer_id="")


def apply_to_traffic(
    traffic: Traffic | None, command: TrafficCommand, rules: Rules
) -> tuple[Traffic | None, list[TrafficOutput]]:
    """Classify a click with the others of its IP; send it on, with every neighbour whose
    classification it changed. A redelivered click is sent on again as it stands.

    >>> from datetime import UTC
    >>> from attribution.messages import ScreenClick
    >>> at = datetime(2026, 1, 1, tzinfo=UTC)
    >>> first = Touchpoint("k1", at, "anna", "spring", "tiktok", "micro", visitor_id="v1")
    >>> again = replace(first, event_id="k2", occurred_at=at + timedelta(minutes=5))
    >>> traffic, _ = apply_to_traffic(None, ScreenClick("ip", "ua", first), Rules())
    >>> traffic, out = apply_to_traffic(traffic, ScreenClick("ip", "ua", again), Rules())
    >>> [(row.event_id, row.status, row.reasons) for row in out if hasattr(row, "status")]
    [('k2', 'invalid', ('duplicate_click',))]
    """
    if isinstance(command, ForgetClickOwners):
        if traffic is not None:
            forget_owners(traffic, command.event_ids)
        return traffic, []
    if traffic is None:
        traffic = Traffic(traffic_key(command))
    touchpoint = command.touchpoint
    known = traffic.clicks.get(touchpoint.event_id)
    if known is not None:
        return traffic, _forward(known)
    arrived = ScreenedClick(touchpoint, command.user_agent_hash)
    traffic.clicks[touchpoint.event_id] = arrived
    # Only clicks near the new one can change; the ones further away keep the flags they have,
    # which the clicks already forgotten may have given them.
    reach = rules.traffic_reach
    moment = touchpoint.occurred_at
    nearby = [
        click
        for click in traffic.clicks.values()
        if abs(click.touchpoint.occurred_at - moment) <= 2 * reach
    ]
    classified = classify(nearby, rules)
    outputs: list[TrafficOutput] = []
    for click in _in_time_order(nearby):
        if abs(click.touchpoint.occurred_at - moment) > reach:
            continue
        flags = classified[click.touchpoint.event_id]
        if click is arrived:
            click.flags = flags
            outputs.extend(_forward(click))
        else:
            # Reasons only grow; a neighbour of a click later than the allowed lateness may have
            # lost a click that gave it one, and keeps it.
            flags = merged_flags(click.flags, flags)
            if flags != click.flags:
                click.flags = flags
                click.version += 1
                outputs.extend(_forward(click))
    _advance_clock(traffic, moment, rules)
    if len(traffic.clicks) > MAX_CLICKS_KEPT:
        oldest = min(traffic.clicks.values(), key=lambda click: click.touchpoint.occurred_at)
        del traffic.clicks[oldest.touchpoint.event_id]
    return traffic, outputs


def _advance_clock(traffic: Traffic, moment: datetime, rules: Rules) -> None:
    previous = traffic.newest_event_at
    if previous is not None and moment <= previous:
        return
    traffic.newest_event_at = moment
    if previous is not None and same_day(previous, moment):
        return
    oldest = moment - rules.traffic_retention
    traffic.clicks = {
        event_id: click
        for event_id, click in traffic.clicks.items()
        if click.touchpoint.occurred_at >= oldest
    }


def traffic_expires_at(traffic: Traffic, rules: Rules) -> datetime | None:
    newest = traffic.newest_event_at
    return None if newest is None else newest + rules.traffic_retention


def traffic_to_wire(traffic: Traffic) -> Wire:
    return {
        "k": traffic.key,
        "n": None if traffic.newest_event_at is None else traffic.newest_event_at.isoformat(),
        "c": [
            [click.touchpoint.to_wire(), click.user_agent_hash, list(click.flags), click.version]
            for click in traffic.clicks.values()
        ],
    }


def traffic_from_wire(wire: Wire) -> Traffic:
    traffic = Traffic(
        wire["k"], newest_event_at=None if wire["n"] is None else datetime.fromisoformat(wire["n"])
    )
    for touchpoint_wire, user_agent_hash, flags, version in wire["c"]:
        touchpoint = Touchpoint.from_wire(touchpoint_wire)
        traffic.clicks[touchpoint.event_id] = ScreenedClick(
            touchpoint, user_agent_hash, tuple(flags), version
        )
    return traffic
