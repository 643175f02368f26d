"""visitors, ledgers, journeys: the three keyed stages, each a core function over a table.

Each batch loads a key's state once, folds its commands in, and writes the state
back once, to the changelog partition of the command's partition.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

from agents.emit import send_journey_command, send_rejection, send_rows
from attribution.identity import Visitor, apply_to_visitor, visitor_from_wire, visitor_to_wire
from attribution.journey import Journey, apply_to_journey, journey_from_wire, journey_to_wire
from attribution.ledger import Ledger, apply_to_ledger, ledger_from_wire, ledger_to_wire
from attribution.messages import OrderUpdated, TouchpointsArrived, Wire, command_from_wire
from attribution.rows import IdentityConflict, Rejection
from attribution.rules import Rules
from streams.app import Topology
from streams.codecs import decode, encode

log = logging.getLogger(__name__)

State = TypeVar("State")


class Stage(Generic[State]):
    """How one keyed stage reads, folds and writes its state."""

    def __init__(
        self,
        name: str,
        apply: Callable[[State | None, Any, Rules], tuple[State, list[Any]]],
        to_wire: Callable[[State], Wire],
        from_wire: Callable[[Wire], State],
        emit: Callable[[Topology, list[Any]], Awaitable[None]],
    ) -> None:
        self.name, self.apply, self.to_wire, self.from_wire, self.emit = (
            name,
            apply,
            to_wire,
            from_wire,
            emit,
        )


async def _emit_visitor_outputs(topology: Topology, outputs: list[Any]) -> None:
    for output in outputs:
        if isinstance(output, TouchpointsArrived):
            await send_journey_command(topology, output)
        elif isinstance(output, IdentityConflict):
            log.info("identity conflict on visitor %s ignored", output.visitor_id)


async def _emit_ledger_outputs(topology: Topology, outputs: list[Any]) -> None:
    for output in outputs:
        if isinstance(output, OrderUpdated):
            await send_journey_command(topology, output)
        elif isinstance(output, Rejection):
            await send_rejection(topology, output)
        else:
            await send_rows(topology, [output])


async def _emit_rows(topology: Topology, outputs: list[Any]) -> None:
    await send_rows(topology, outputs)


VISITORS: Stage[Visitor] = Stage(
    "visitors", apply_to_visitor, visitor_to_wire, visitor_from_wire, _emit_visitor_outputs
)
LEDGERS: Stage[Ledger] = Stage(
    "ledgers", apply_to_ledger, ledger_to_wire, ledger_from_wire, _emit_ledger_outputs
)
JOURNEYS: Stage[Journey] = Stage(
    "journeys", apply_to_journey, journey_to_wire, journey_from_wire, _emit_rows
)


def _register_stage(topology: Topology, stage: Stage[Any], source: Any, table: Any) -> None:
    settings = topology.settings
    rules = settings.rules

    async def run(stream: Any) -> None:
        async for events in stream.take_events(
            settings.stage_batch_events, within=settings.stage_batch_seconds
        ):
            states: dict[bytes, Any] = {}
            partitions: dict[bytes, int] = {}
            for event in events:
                key: bytes = event.key
                if key not in states:
                    stored = table.data.get(key)
                    states[key] = None if stored is None else stage.from_wire(decode(stored))
                partitions[key] = event.message.partition
                wire = decode(event.value)
                try:
                    states[key], outputs = stage.apply(states[key], command_from_wire(wire), rules)
                except Exception as error:  # a bug must not stop the pipeline: dead-letter it
                    log.exception("stage %s failed on key %r", stage.name, key)
                    await send_rejection(
                        topology, Rejection("", "", f"{stage.name} failed: {error!r}", wire)
                    )
                    continue
                await stage.emit(topology, outputs)
            for key, state in states.items():
                if state is None:
                    continue
                value = encode(stage.to_wire(state))
                table.data[key] = value
                table.send_changelog(partitions[key], key, value)

    topology.app.agent(source, name=stage.name)(run)


def register(topology: Topology) -> None:
    _register_stage(topology, VISITORS, topology.visitor_commands, topology.visitors)
    _register_stage(topology, LEDGERS, topology.order_commands, topology.ledgers)
    _register_stage(topology, JOURNEYS, topology.journey_commands, topology.journeys)
