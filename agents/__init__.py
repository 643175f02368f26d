"""Thin Faust agents: decode, call the core, save state, emit. No business rules here."""

from __future__ import annotations

from agents import collector, ingest, ops, sink, stages, web
from streams.app import Topology


def register_agents(topology: Topology) -> None:
    ingest.register(topology)
    stages.register(topology)
    sink.register(topology)
    web.register(topology)
    ops.register(topology)
    collector.register(topology)
