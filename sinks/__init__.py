"""Adapters to the outside: ClickHouse (results, analytics) and Redis (catalog)."""
