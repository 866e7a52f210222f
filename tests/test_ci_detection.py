"""One definition of "in CI" for every fixture that needs a server: in CI a missing server
fails the test, elsewhere it skips it."""

from __future__ import annotations

import pytest

from tests import pg_fixtures
from tests import test_feature_store as feature_store
from tests.conftest import in_ci

UNREACHABLE = "postgresql://postgres@127.0.0.1:1/postgres"
CI_ON = ["1", "true", "yes", "TRUE", "Yes"]
CI_OFF = ["", "0", "false", "no"]


@pytest.mark.parametrize("value", CI_ON)
def test_ci_values_count_as_ci(monkeypatch, value):
    monkeypatch.setenv("CI", value)
    assert in_ci()


@pytest.mark.parametrize("value", CI_OFF)
def test_other_values_do_not(monkeypatch, value):
    monkeypatch.setenv("CI", value)
    assert not in_ci()


def _outcome(monkeypatch, value: str | None, reach) -> type[BaseException]:
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    with pytest.raises((pytest.fail.Exception, pytest.skip.Exception)) as caught:
        reach()
    return caught.type


def _pg_url(monkeypatch):
    monkeypatch.setenv("DATABASE_URL", UNREACHABLE)
    return lambda: next(pg_fixtures.pg_url.__wrapped__())


def _feature_database(monkeypatch):
    monkeypatch.setattr(feature_store, "server_url", lambda: UNREACHABLE)
    return lambda: feature_store._create_database([])


@pytest.mark.parametrize("reach", [_pg_url, _feature_database], ids=["pg_fixtures", "feature_store"])
@pytest.mark.parametrize("value", CI_ON)
def test_an_unreachable_server_fails_in_ci(monkeypatch, reach, value):
    assert _outcome(monkeypatch, value, reach(monkeypatch)) is pytest.fail.Exception


@pytest.mark.parametrize("reach", [_pg_url, _feature_database], ids=["pg_fixtures", "feature_store"])
@pytest.mark.parametrize("value", [*CI_OFF, None])
def test_an_unreachable_server_skips_elsewhere(monkeypatch, reach, value):
    assert _outcome(monkeypatch, value, reach(monkeypatch)) is pytest.skip.Exception
