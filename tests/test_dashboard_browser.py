"""The dashboard page in headless Debian chromium (Selenium + chromedriver from apt): it loads
with no console errors, its charts draw a simulated site's data, switching site redraws them,
and a screenshot is kept as an artifact (``ARTIFACTS_DIR`` when set: the README's pictures in
docs/img are these, made with ``ARTIFACTS_DIR=docs/img``)."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from benchmarks.dashboard_data import STEPS
from cloud.dashboard.app import create_app
from cloud.store.sqlite import SQLiteCloudStore
from tests.conftest import in_ci
from tests.test_dashboard_api import fill_store

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHARTS = ("chart-power", "chart-battery", "chart-forecast", "chart-plan")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,2700")

# The shape run_portfolio.py writes (cloud.portfolio.kpis.summary), trimmed to a few KPIs.
PORTFOLIO_SUMMARY = {"sites": 200, "steps": 168, "step_hours": 1.0, "start": "2025-07-01T07:00:00+00:00", "currency": "USD",
                     "strategies": {name: {"total_cost": cost, "peak_aggregate_import_kw": peak, "savings": 9100.0 - cost}
                                    for name, cost, peak in (("no_battery", 9100.0, 812.0), ("rule_based", 8200.5, 790.1),
                                                             ("central", 7700.25, 610.0))}}


def _require_browser() -> None:
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not Path(p).exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package")
    if not missing:
        return
    message = f"browser test needs {', '.join(missing)} (apt-get install chromium chromium-driver; pip install selenium)"
    if in_ci():
        pytest.fail(f"{message}; CI=true requires it (.ci/apt-packages lists the system packages)")
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def serving(app) -> Iterator[str]:
    """``app`` on a free loopback port in a thread of this process, for a browser to load."""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=_free_port(), log_level="warning")
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not running.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("dashboard server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{config.port}"
    finally:
        running.should_exit = True
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser")
    store = SQLiteCloudStore(folder / "cloud.db")
    configs = fill_store(store, n_sites=2, seed=5)
    (folder / "portfolio" / "newer").mkdir(parents=True)
    (folder / "portfolio" / "summary.json").write_text(json.dumps(PORTFOLIO_SUMMARY))
    (folder / "portfolio" / "newer" / "summary.json").write_text("{")  # a run cut short while writing
    for run in (folder / "portfolio", folder / "portfolio" / "newer"):
        for name in ("timesteps.csv", "sites.csv"):
            (run / name).write_text("")
    later = (folder / "portfolio" / "summary.json").stat().st_mtime + 60
    os.utime(folder / "portfolio" / "newer" / "summary.json", (later, later))
    with serving(create_app(store, portfolio_dir=folder / "portfolio")) as url:
        yield url, [c.device_id for c in configs]
    store.close()


@pytest.fixture
def browser(tmp_path):
    _require_browser()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path / 'profile'}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _wait_for(driver, condition, what: str, timeout_s: float = 30):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout_s).until(lambda d: condition(d), message=f"timed out waiting for {what}")


def _chart_state(driver) -> dict[str, tuple[str, int, bool]]:
    """Per chart: the site it drew, its point count, and whether a canvas with pixels exists."""
    state = driver.execute_script("""
        const out = {};
        for (const id of arguments[0]) {
          const box = document.getElementById(id), canvas = box.querySelector('canvas');
          let inked = false;
          if (canvas) {
            const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
            for (let i = 3; i < data.length; i += 4) if (data[i] > 0) { inked = true; break; }
          }
          out[id] = [box.dataset.site || '', Number(box.dataset.points), inked];
        }
        return out;""", list(CHARTS))
    return {chart: tuple(values) for chart, values in state.items()}


def _save_screenshot(driver, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    driver.save_screenshot(str(path))
    if os.environ.get("ARTIFACTS_DIR"):
        target = Path(os.environ["ARTIFACTS_DIR"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / name)
    return path


def test_dashboard_draws_a_site_and_switches(server, browser, tmp_path):
    from selenium.webdriver.support.ui import Select

    url, devices = server
    browser.get(url + "/")
    _wait_for(browser, lambda d: d.find_element("tag name", "body").get_attribute("data-loaded") == devices[0],
              "the first site to load")
    first = _chart_state(browser)
    assert first == {
        "chart-power": (devices[0], 2 * STEPS, True), "chart-battery": (devices[0], 2 * STEPS, True),
        "chart-forecast": (devices[0], STEPS, True), "chart-plan": (devices[0], STEPS, True),
    }
    assert browser.find_element("id", "savings").text.startswith("$")
    stages = [row.get_attribute("data-job") for row in browser.find_elements("css selector", "#pipeline tbody tr")]
    assert stages == ["cloud_sync", "feature_engineering"]
    assert len(browser.find_elements("css selector", "#next-actions li")) >= 1
    # The store holds June 2024: the page says how old its newest reading is and that the plan is past.
    assert re.search(r"newest \w+, \d\d:\d\d \w+, \d+\.\d days ago$", browser.find_element("id", "site-detail").text)
    assert re.match(r"this plan ended \w+, \d\d:\d\d \w+, \d+\.\d days ago: no newer plan is stored",
                    browser.find_element("id", "plan-stale").text)
    assert browser.find_element("id", "next-now").text.startswith("Was next: ")
    assert re.search(r" — issued \w+, \d\d:\d\d \w+, \d+\.\d days ago$", browser.find_element("id", "forecast-note").text)
    assert re.match(r"Issued \w+, \d\d:\d\d \w+, \d+\.\d days ago · ", browser.find_element("id", "plan-note").text)
    portfolio_rows = browser.find_elements("css selector", "#portfolio-body tbody tr")
    assert [row.find_element("tag name", "td").text for row in portfolio_rows] == list(PORTFOLIO_SUMMARY["strategies"])
    assert "7,700.25" in browser.find_element("id", "portfolio-body").text
    assert "newer/summary.json skipped (unreadable: " in browser.find_element("id", "portfolio-body").text
    heads = [th.text for th in browser.find_elements("css selector", "#portfolio-body thead th")]
    assert heads == ["strategy", "total cost (USD)", "savings (USD)", "peak aggregate import (kW)"]
    assert "790.1" in browser.find_element("id", "portfolio-body").text and "610.0" in browser.find_element("id", "portfolio-body").text
    screenshot = _save_screenshot(browser, tmp_path, "dashboard.png")
    assert screenshot.stat().st_size > 10_000

    site_text = browser.find_element("id", "site-detail").text
    Select(browser.find_element("id", "site")).select_by_value(devices[1])
    _wait_for(browser, lambda d: all(v[0] == devices[1] for v in _chart_state(d).values()), "charts of the second site")
    second = _chart_state(browser)
    assert all(points > 0 and inked for _, points, inked in second.values())
    assert browser.find_element("id", "site-detail").text != site_text
    assert devices[1] in browser.current_url
    _save_screenshot(browser, tmp_path, "dashboard-site-2.png")

    errors = [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")]
    assert errors == []


def test_a_chart_with_no_value_among_the_readings_says_so(tmp_path, browser):
    """A home whose meter gives PV and load only, imported and not yet planned: the page loads,
    the battery and price chart names what is missing and what plans use instead, the power
    chart is drawn, and the plan's cards say there is none yet."""
    import numpy as np
    import pandas as pd

    from der_core import der_data as dd

    store = SQLiteCloudStore(tmp_path / "cloud.db")
    ts = pd.date_range(pd.Timestamp.now(tz="UTC").floor("15min") - pd.Timedelta(minutes=15 * 191), periods=192, freq="15min")
    frame = pd.DataFrame({dd.DEVICE_ID: "meter-only", dd.TS: ts, dd.SOLAR_KW: 1.0,
                          dd.LOAD_TOTAL: 0.5 + 0.1 * np.sin(np.arange(192))}).reindex(columns=dd.COLUMNS)
    frame = dd.coerce_frame(frame)
    store.upsert_readings(frame, fields=[dd.SOLAR_KW, dd.LOAD_TOTAL])
    with serving(create_app(store)) as url:
        browser.get(url + "/?site=meter-only")
        _wait_for(browser, lambda d: d.find_element("tag name", "body").get_attribute("data-loaded") == "meter-only",
                  "the site to load")
        state = _chart_state(browser)
        box = browser.find_element("id", "chart-battery")
        assert state["chart-power"] == ("meter-only", 192, True)
        assert state["chart-battery"] == ("meter-only", 0, False)
        assert box.text.startswith("No battery state of charge or grid price among these readings: a plan starts")
        assert browser.find_element("id", "next-actions").text == "no plan yet"
        assert re.search(r", \d+ (s|min) ago$", browser.find_element("id", "site-detail").text)  # read within 15 min
        assert browser.find_element("id", "status").text.startswith("updated ")
    store.close()


FLEET_TOKEN = "fleet-s3cret"


@pytest.fixture(scope="module")
def fleet_server(tmp_path_factory):
    from tests.test_fleet_page import write_portfolio

    folder = tmp_path_factory.mktemp("fleet-browser")
    store = SQLiteCloudStore(folder / "cloud.db")
    portfolio = write_portfolio(folder / "portfolio")
    shutil.copytree(portfolio / "run", portfolio / "newer")  # a newer run cut short while writing
    (portfolio / "newer" / "summary.json").write_text("{")
    later = (portfolio / "run" / "summary.json").stat().st_mtime + 60
    os.utime(portfolio / "newer" / "summary.json", (later, later))
    with serving(create_app(store, token=FLEET_TOKEN, portfolio_dir=portfolio)) as url:
        yield url
    store.close()


def test_aggregator_page_draws_the_fleet_dr_windows_distributions_and_starved_sites(fleet_server, browser, tmp_path):
    browser.set_window_size(1280, 1900)
    browser.get(fleet_server + "/fleet")  # the session's first page: it asks for the token
    _wait_for(browser, lambda d: d.find_element("id", "token-form").is_displayed(), "the page to ask for the token")
    browser.find_element("id", "token").send_keys(FLEET_TOKEN)
    browser.find_element("css selector", "#token-form button").click()
    _wait_for(browser, lambda d: len(d.find_elements("css selector", "#fleet-kpis table tr")) > 1, "the fleet page to draw")
    for chart, title in (("load-chart", "Fleet net grid import per strategy (kW"), ("savings-chart", "Savings per battery site (USD)"),
                         ("satisfaction-chart", "Satisfaction per battery site (%)")):
        box = browser.find_element("id", chart)
        assert box.find_element("css selector", ".u-title").text.startswith(title), chart
        assert box.find_elements("tag name", "canvas"), chart
        axes = browser.execute_script("return window.fleetCharts[arguments[0]].axes.map(a => a.label)", chart)
        assert len(axes) == 2 and all(axes), chart
    load = browser.find_element("id", "load-chart")
    assert browser.execute_script("return window.fleetCharts['load-chart'].axes.map(a => a.label)") == [
        "time (America/Los_Angeles)", "fleet net import (kW)"]
    assert "USD" in browser.execute_script("return window.fleetCharts['savings-chart'].axes[0].label")
    assert "DR target" in load.text and "import cap" in load.text
    assert "shaded: demand-response windows (1)" in browser.find_element("id", "load-note").text
    shaded = browser.execute_script("""
        const c = document.querySelector('#load-chart canvas'), d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        let n = 0; for (let i = 0; i < d.length; i += 4) if (d[i] > 240 && d[i + 1] > 140 && d[i + 1] < 190 && d[i + 2] < 40 && d[i + 3] > 0) n++;
        return n;""")
    assert shaded > 500  # the orange DR shading
    starved = [li.text for li in browser.find_elements("css selector", "#starved li")]
    assert starved and all("kWh not served" in s for s in starved)
    assert "USD" in browser.find_element("id", "about").text
    assert browser.find_element("id", "status").text.startswith("showing run; newer skipped (unreadable: summary.json: ")
    names = [row.find_element("tag name", "td").text for row in browser.find_elements("css selector", "#kpis tr")[1:]]
    assert {"total cost (USD)", "peak aggregate import (kW)", "dr delivered (kWh)"} <= set(names), names
    assert 10_000 < _save_screenshot(browser, tmp_path, "dashboard-fleet.png").stat().st_size < 300_000
    browser.get(fleet_server + "/")
    assert browser.find_element("id", "fleet-link").get_attribute("href").endswith("/fleet")
    errors = [entry for entry in browser.get_log("browser") if entry["level"] in ("SEVERE", "ERROR")
              and "/api/" not in entry["message"]]  # the site page has no sites in this store
    assert errors == []
