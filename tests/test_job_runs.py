"""A job's ``pipeline_runs`` row always ends: ``ok`` with its rows, or ``failed`` with one line
naming the error, whatever the error is. In a daemon that lives on, a run left ``running``
would read as under way for ever."""

from __future__ import annotations

import pandas as pd
import pytest

from cloud.feature_engineering import job as features
from cloud.job_status import recorded_run
from cloud.store.sqlite import SQLiteCloudStore
from der_core.errors import UsageError


@pytest.fixture
def store(tmp_path):
    with SQLiteCloudStore(tmp_path / "cloud.db") as cloud:
        yield cloud


@pytest.mark.parametrize("error, recorded", [
    (UsageError("home-1: no readings"), "home-1: no readings"),
    (ValueError("cannot reindex on an axis\nwith duplicate labels"), "ValueError: cannot reindex on an axis with duplicate labels"),
    (KeyboardInterrupt(), "KeyboardInterrupt: "),
    # A store path of bytes that are not UTF-8, quoted by the error: kept as escapes, recorded.
    (UsageError("data/bad\udcff.db: no readings"), "data/bad\\udcff.db: no readings"),
])
def test_any_error_fails_the_run_with_one_line_and_is_raised_on(store, error, recorded):
    def work():
        raise error

    with pytest.raises(type(error)):
        recorded_run(store, "optimizer", {"device_id": "home-1"}, work)
    run = store.last_run("optimizer")
    assert (run["status"], run["error"].strip()) == ("failed", recorded.strip())


def test_a_run_that_works_is_ok_with_its_rows(store):
    assert recorded_run(store, "publish", {}, lambda: ("sent", 3)) == "sent"
    assert (store.last_run("publish")["status"], store.last_run("publish")["rows"]) == ("ok", 3)


def test_a_defect_in_the_feature_job_fails_its_run(store, monkeypatch):
    def broken(*_args, **_kwargs):
        raise ValueError("a defect")

    monkeypatch.setattr(features, "process_sites", broken)
    with pytest.raises(ValueError):
        features.run_features(store, now=pd.Timestamp("2024-06-01", tz="UTC"))
    run = store.last_run(features.JOB)
    assert (run["status"], run["error"]) == ("failed", "ValueError: a defect")
