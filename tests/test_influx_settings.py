"""InfluxDB settings: a flag wins over its variable, the variable over the default; what
cannot be meant is refused where the settings enter."""

from __future__ import annotations

import argparse

import pytest

from der_core.errors import UsageError
from edge_gateway.stores.influx_settings import (
    DEFAULT_INFLUX_BUCKET,
    DEFAULT_INFLUX_ORG,
    DEFAULT_INFLUX_URL,
    DEFAULT_RETENTION_DAYS,
    add_influx_flags,
    influx_requested,
    influx_settings,
)

VARIABLES = ("INFLUXDB_URL", "INFLUXDB_TOKEN", "INFLUXDB_ORG", "INFLUXDB_BUCKET")


@pytest.fixture(autouse=True)
def no_variables(monkeypatch):
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)


def parsed(*argv: str, with_enable: bool = True) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_influx_flags(parser, with_enable=with_enable)
    return parser.parse_args(argv)


@pytest.mark.parametrize("flag, variable, expected", [
    (None, None, DEFAULT_INFLUX_ORG),
    (None, "from-variable", "from-variable"),
    ("from-flag", "from-variable", "from-flag"),
])
def test_a_flag_wins_over_its_variable_and_the_variable_over_the_default(monkeypatch, flag, variable, expected):
    if variable is not None:
        monkeypatch.setenv("INFLUXDB_ORG", variable)
    args = parsed("--influxdb-token", "t", *(("--influxdb-org", flag) if flag else ()))
    assert influx_settings(args).org == expected


def test_defaults_are_the_specs():
    settings = influx_settings(parsed("--influxdb-token", "t"))
    assert (settings.url, settings.bucket, settings.retention_days) == (DEFAULT_INFLUX_URL, DEFAULT_INFLUX_BUCKET,
                                                                        DEFAULT_RETENTION_DAYS)


@pytest.mark.parametrize("argv, message", [
    ((), "InfluxDB token missing: pass --influxdb-token or set INFLUXDB_TOKEN"),
    (("--influxdb-token", "t", "--influxdb-retention-days", "-1"), "expected 0 \\(forever\\) to 36500 days, got -1"),
    (("--influxdb-token", "t", "--influxdb-url", "localhost:8086"), "expected http://host:port or https://host:port"),
])
def test_settings_that_cannot_be_meant_are_refused(argv, message):
    with pytest.raises(UsageError, match=message):
        influx_settings(parsed(*argv))


@pytest.mark.parametrize("argv, with_enable, token_variable, expected", [
    (("--enable-influxdb",), True, False, True),
    ((), True, True, False),  # a command with the flag uses InfluxDB only when asked
    ((), False, True, True),  # a job without the flag: a token asks for it
    ((), False, False, False),
])
def test_influx_is_requested_by_the_flag_or_for_jobs_without_it_by_a_token(monkeypatch, argv, with_enable,
                                                                            token_variable, expected):
    if token_variable:
        monkeypatch.setenv("INFLUXDB_TOKEN", "t")
    assert influx_requested(parsed(*argv, with_enable=with_enable)) is expected
