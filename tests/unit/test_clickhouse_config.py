"""The server path: what the ClickHouse client is configured with for an http(s) DSN.

No ClickHouse server runs here; docker-compose and production use these DSNs.
"""

from __future__ import annotations

import pytest

from sinks.clickhouse import server_arguments


def test_compose_dsn_reaches_the_attribution_database_as_its_user() -> None:
    assert server_arguments("http://attribution:change-me@clickhouse:8123/attribution") == {
        "host": "clickhouse",
        "port": 8123,
        "secure": False,
        "username": "attribution",
        "password": "change-me",
        "database": "attribution",
    }


def test_https_defaults_to_tls_port_and_decodes_escaped_passwords() -> None:
    arguments = server_arguments("https://worker:p%40ss%2Fw0rd%3A@ch.example.com/analytics")
    assert (arguments["port"], arguments["secure"], arguments["password"]) == (
        8443,
        True,
        "p@ss/w0rd:",
    )


def test_missing_user_and_database_fall_back_to_defaults() -> None:
    arguments = server_arguments("http://localhost")
    assert (arguments["username"], arguments["password"], arguments["database"]) == (
        "default",
        "",
        "default",
    )


@pytest.mark.parametrize("dsn", ["clickhouse://host:9000/db", "http:///db", "localhost:8123"])
def test_other_schemes_are_refused_with_the_expected_form(dsn: str) -> None:
    with pytest.raises(ValueError, match=r"http\(s\)://user:pw@host:port/db"):
        server_arguments(dsn)
