"""Thin Faust agents: decode, call the core, save state, emit. No business rules here."""

from __future__ import annotations

from agents import catalog, collector, fx, ingest, ops, sink, stages, web
from streams.app import Topology


def register_agents(topology: Topology) -> None:
    """The agents of the worker's role (`Settings.role`)."""
    catalog.register(topology)
    if topology.runs_stages:
        ingest.register(topology)
        stages.register(topology)
        collector.register(topology)
    if topology.owns_clickhouse:
        sink.register(topology)
        fx.register(topology)
    web.register(topology)
    ops.register(topology)
