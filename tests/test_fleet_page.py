"""The aggregator's page and its data, the portfolio plots, and /docs with no network."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from cloud.dashboard.app import create_app
from cloud.portfolio import report
from cloud.portfolio.engine import RunSpec, run_portfolio
from cloud.portfolio.fleet import draw_fleet
from cloud.portfolio.kpis import combine
from cloud.portfolio.scenario import Scenario
from cloud.store.sqlite import SQLiteCloudStore

SCENARIO = Scenario("test", import_cap_fraction=0.9, dr_day=0, dr_hours=3.0, supply_fraction=0.6, deaf_share=0.5)


def portfolio_result(sites: int = 8, hours: int = 48):
    times = pd.date_range("2025-07-01", periods=hours, freq="h", tz="America/Los_Angeles").tz_convert("UTC")
    spec = RunSpec(draw_fleet(sites, seed=4, group_size=4), times, ("no_battery", "rule_based", "central"), SCENARIO, seed=4)
    parts, limits = run_portfolio(spec, partitions=1)
    return combine(parts, spec.times, 1.0, limits)


def write_portfolio(folder: Path) -> Path:
    report.write_outputs(portfolio_result(), folder / "run")
    return folder


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fleet")
    store = SQLiteCloudStore(folder / "cloud.db")
    with TestClient(create_app(store, portfolio_dir=write_portfolio(folder / "portfolio"))) as c:
        yield c
    store.close()


@pytest.mark.parametrize("path, kinds", [("/docs", (".js", ".css")), ("/redoc", (".js",))])
def test_docs_and_every_asset_it_names_are_served_here(client, path, kinds):
    page = client.get(path)
    assert page.status_code == 200
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: ?["']([^"']+)["']""", page.text)
    urls = [a or b for a, b in urls]
    assert all(any(u.endswith(kind) for u in urls) for kind in kinds)
    for url in urls:
        assert url.startswith("/"), f"{url} is not on this host"
        assert client.get(url).status_code == 200, url


def test_fleet_data_has_the_series_windows_distributions_and_starved_sites(client):
    data = client.get("/api/portfolio/fleet").json()
    assert data["available"] and data["timezone"] == "America/Los_Angeles" and data["currency"] == "USD"
    assert set(data["grid_kw"]) == {"no_battery", "rule_based", "central"}
    assert all(len(v) == len(data["times"]) == 48 for v in data["grid_kw"].values())
    assert data["dr_windows"] == [[data["times"][17], data["times"][19] + 3600]]
    assert set(data["savings"]) == {"rule_based", "central"} and all(len(v) > 0 for v in data["savings"].values())
    assert data["starved_sites"] and {"site_id", "strategy", "unserved_kwh"} <= set(data["starved_sites"][0])
    assert client.get("/fleet").status_code == 200
    assert 'href="/fleet"' in client.get("/").text


def test_fleet_data_says_when_there_is_no_run(tmp_path):
    with SQLiteCloudStore(tmp_path / "cloud.db") as store, TestClient(create_app(store, portfolio_dir=tmp_path / "none")) as c:
        assert c.get("/api/portfolio/fleet").json()["available"] is False


def test_every_plot_has_a_title_units_local_time_and_the_dr_target_over_its_window(tmp_path, monkeypatch):
    figures = {}
    monkeypatch.setattr(report, "_save", lambda fig, path: figures.setdefault(path.name, fig) and path.name)
    result = portfolio_result()
    report._plots(result, tmp_path, "America/Los_Angeles", "USD")
    assert set(figures) == {"aggregate_load.png", "dr_event.png", "soc_distribution.png", "savings_distribution.png"}
    for name, fig in figures.items():
        ax = fig.axes[0]
        assert ax.get_title(), name
        assert re.search(r"\((kW|%|USD)", ax.get_ylabel() + ax.get_xlabel()), name
    for name in ("aggregate_load.png", "dr_event.png", "soc_distribution.png"):
        assert "America/Los_Angeles" in figures[name].axes[0].get_xlabel(), name
    assert len(figures["soc_distribution.png"].axes) == 2  # the colour bar
    assert "USD" in figures["savings_distribution.png"].axes[0].get_xlabel()
    dr = figures["dr_event.png"].axes[0]
    target = next(line for line in dr.get_lines() if line.get_label().startswith("DR target"))
    assert np.isfinite(target.get_ydata().astype(float)).sum() == 3
    assert target.get_linestyle() == "-"  # a line over the window, not markers at its steps
