"""The aggregator's data from a portfolio folder holding a run that cannot be read: the run
is named with why and the newest readable one is shown, never a 500."""

from __future__ import annotations

import json
import os
import shutil

import pytest
from fastapi.testclient import TestClient

from cloud.dashboard.app import create_app
from cloud.portfolio import report
from cloud.store.sqlite import SQLiteCloudStore
from tests.test_fleet_page import portfolio_result


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """One portfolio run as run_portfolio.py writes it, made once (it takes a second)."""
    run = tmp_path_factory.mktemp("written") / "run"
    report.write_outputs(portfolio_result(sites=4, hours=24), run)
    return run


def _break(run, how):
    if how == "cut short":
        text = (run / "summary.json").read_text()
        (run / "summary.json").write_text(text[: len(text) // 2])
    elif how == "no strategies":
        (run / "summary.json").write_text(json.dumps({"sites": 3}))
    elif how == "not an object":
        (run / "summary.json").write_text("[]")
    else:
        (run / "timesteps.csv").write_text("ts\n2025-07-01T00:00:00Z\n")


@pytest.mark.parametrize("how, error", [
    ("cut short", "unreadable: summary.json: "),
    ("no strategies", "unreadable: missing 'strategies'"),
    ("not an object", "unreadable: summary.json: expected a JSON object"),
    ("columns missing", "unreadable: missing "),
])
def test_an_unreadable_run_is_skipped_with_its_reason(tmp_path, written, how, error):
    folder = tmp_path / "portfolio"
    shutil.copytree(written, folder / "run")
    shutil.copytree(written, folder / "newer")
    newer = folder / "newer" / "summary.json"
    os.utime(newer, (newer.stat().st_atime, newer.stat().st_mtime + 60))
    _break(folder / "newer", how)
    with SQLiteCloudStore(tmp_path / "cloud.db") as store, TestClient(create_app(store, portfolio_dir=folder)) as client:
        reply = client.get("/api/portfolio/fleet")
        assert reply.status_code == 200
        body = reply.json()
        assert body["available"] and body["path"] == "run"
        (skipped,) = body["skipped"]
        assert skipped["path"] == "newer" and skipped["error"].startswith(error) and "\n" not in skipped["error"]

        shutil.rmtree(folder / "run")
        body = client.get("/api/portfolio/fleet").json()
        assert not body["available"] and [s["path"] for s in body["skipped"]] == ["newer"]
