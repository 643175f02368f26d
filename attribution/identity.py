"""The visitor stage: which customer a browser belongs to, and where its clicks go.

Clicks of an anonymous visitor wait under the visitor's key. The first link of the
visitor to a customer wins (contract 2.5); the waiting clicks then move to the
customer's journey and later clicks are forwarded there directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime

from attribution.messages import (
    ForgetClickOwners,
    ForgetVisitor,
    Touchpoint,
    TouchpointsArrived,
    VisitorCommand,
    VisitorLink,
    Wire,
)
from attribution.rows import IdentityConflict, IdentityLinked
from attribution.rules import Rules, same_day
from attribution.traffic import merged_flags


@dataclass(slots=True)
class Visitor:
    visitor_id: str
    customer_id: str = ""
    linked_at: datetime | None = None
    waiting: dict[str, Touchpoint] = field(default_factory=dict)
    """Clicks seen before the link. Kept after it (until they age out) so that a redelivered
    link can forward them again if the first forward was lost in a crash."""
    newest_event_at: datetime | None = None


VisitorOutput = TouchpointsArrived | IdentityLinked | IdentityConflict | ForgetClickOwners


def _expire(visitor: Visitor, moment: datetime, rules: Rules) -> None:
    previous = visitor.newest_event_at
    if previous is not None and moment <= previous:
        return
    visitor.newest_event_at = moment
    if not visitor.waiting or (previous is not None and same_day(previous, moment)):
        return
    oldest = moment - rules.touchpoint_retention
    visitor.waiting = {
        event_id: touchpoint
        for event_id, touchpoint in visitor.waiting.items()
        if touchpoint.occurred_at >= oldest
    }


def visitor_expires_at(visitor: Visitor, rules: Rules) -> datetime | None:
    """When the visitor can be forgotten: an anonymous one once its clicks aged out, a
    linked one once it has been idle for the identity retention (None: already)."""
    newest = visitor.newest_event_at
    retention = rules.identity_retention if visitor.customer_id else rules.touchpoint_retention
    return None if newest is None else newest + retention


def _link(visitor: Visitor, link: VisitorLink) -> list[VisitorOutput]:
    if visitor.customer_id and visitor.customer_id != link.customer_id:
        return [IdentityConflict(visitor.visitor_id, visitor.customer_id, link.customer_id)]
    merged: list[VisitorOutput] = (
        [] if visitor.customer_id else [IdentityLinked(visitor.visitor_id, link.customer_id)]
    )
    visitor.customer_id = link.customer_id
    if visitor.linked_at is None or link.occurred_at < visitor.linked_at:
        visitor.linked_at = link.occurred_at
    # Forwarding on every link (even a repeated one) is what makes redelivery safe;
    # the journey ignores clicks it already holds.
    return [
        TouchpointsArrived(
            visitor.customer_id,
            visitor.visitor_id,
            visitor.linked_at,
            tuple(visitor.waiting.values()),
        ),
        *merged,
    ]


def apply_to_visitor(
    visitor: Visitor | None, command: VisitorCommand, rules: Rules
) -> tuple[Visitor | None, list[VisitorOutput]]:
    """Fold a click or a link into a visitor; return the state (None: forget the visitor, an
    erased customer's) and the journey commands.

    >>> from datetime import UTC
    >>> from attribution.messages import VisitorClick
    >>> at = datetime(2026, 1, 1, tzinfo=UTC)
    >>> tp = Touchpoint("k1", at, "anna", "spring", "tiktok", "micro", visitor_id="v1")
    >>> visitor, out = apply_to_visitor(None, VisitorClick("v1", tp), Rules())
    >>> out, len(visitor.waiting)
    ([], 1)
    >>> visitor, out = apply_to_visitor(visitor, VisitorLink("v1", "c1", at, "i1"), Rules())
    >>> out[0].customer_id, [tp.event_id for tp in out[0].touchpoints]
    ('c1', ['k1'])
    """
    if isinstance(command, ForgetVisitor):
        waiting = [] if visitor is None else list(visitor.waiting.values())
        return None, list(forget_click_owners(waiting))
    if visitor is None:
        visitor = Visitor(command.visitor_id)
    if isinstance(command, VisitorLink):
        outputs = _link(visitor, command)
        _expire(visitor, command.occurred_at, rules)
        return visitor, outputs
    touchpoint = command.touchpoint
    outputs = []
    if touchpoint.customer_id:
        outputs = _link(
            visitor,
            VisitorLink(
                visitor.visitor_id,
                touchpoint.customer_id,
                touchpoint.occurred_at,
                touchpoint.event_id,
            ),
        )
        outputs.append(
            TouchpointsArrived(touchpoint.customer_id, visitor.visitor_id, None, (touchpoint,))
        )
    elif visitor.customer_id:
        outputs = [
            TouchpointsArrived(
                visitor.customer_id, visitor.visitor_id, visitor.linked_at, (touchpoint,)
            )
        ]
    held = visitor.waiting.get(touchpoint.event_id)
    if held is not None:
        # A reclassified click: a redelivered link must forward its newest reasons.
        touchpoint = replace(touchpoint, flags=merged_flags(held.flags, touchpoint.flags))
    if held is not None or not visitor.customer_id:
        visitor.waiting[touchpoint.event_id] = touchpoint
    _expire(visitor, touchpoint.occurred_at, rules)
    return visitor, outputs


def forget_click_owners(clicks: Iterable[Touchpoint]) -> Iterator[ForgetClickOwners]:
    """Commands that make the traffic stage forget whose these clicks were, one per key."""
    by_key: dict[tuple[str, str], list[str]] = {}
    for click in clicks:
        if click.ip_hash:
            by_key.setdefault((click.ip_hash, click.influencer_id), []).append(click.event_id)
    for (ip_hash, influencer_id), event_ids in sorted(by_key.items()):
        yield ForgetClickOwners(ip_hash, influencer_id, tuple(sorted(event_ids)))


def visitor_to_wire(visitor: Visitor) -> Wire:
    return {
        "v": visitor.visitor_id,
        "u": visitor.customer_id,
        "l": None if visitor.linked_at is None else visitor.linked_at.isoformat(),
        "w": [touchpoint.to_wire() for touchpoint in visitor.waiting.values()],
        "n": None if visitor.newest_event_at is None else visitor.newest_event_at.isoformat(),
    }


def visitor_from_wire(wire: Wire) -> Visitor:
    waiting = (Touchpoint.from_wire(touchpoint) for touchpoint in wire["w"])
    return Visitor(
        wire["v"],
        wire["u"],
        None if wire["l"] is None else datetime.fromisoformat(wire["l"]),
        {touchpoint.event_id: touchpoint for touchpoint in waiting},
        None if wire["n"] is None else datetime.fromisoformat(wire["n"]),
    )
