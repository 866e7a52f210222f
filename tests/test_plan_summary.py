"""The plan summary a home owner reads: action blocks folded from slivers with their energy kept,
every block with its reason, and, after the README's Quick start, the same blocks and the same
savings in ``run_pipeline.py``'s printout, ``run_optimizer.py``, the API and the dashboard."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from cloud.dashboard.app import create_app
from cloud.optimization.summary import NO_BATTERY, PlanSummary, StepInputs, summarize
from cloud.store import schema as s
from cloud.store.sqlite import SQLiteCloudStore
from der_core.config import build_config
from der_core.money import money
from tests.quick_start import copy_of, run_script
from tests.test_dashboard_browser import browser  # noqa: F401  (the headless chromium fixture)

ROOT = Path(__file__).resolve().parents[1]
ZONE = "America/Los_Angeles"


def _steps(actions: list[str], battery_kw: list[float], start: str = "2024-06-12 08:15") -> StepInputs:
    n = len(actions)
    stamps = pd.date_range(pd.Timestamp(start, tz=ZONE).tz_convert("UTC"), periods=n, freq="15min")
    price = np.where(stamps.tz_convert(ZONE).hour >= 17, 0.30, 0.08)
    return StepInputs(stamps, 0.25, tuple(actions), np.array(battery_kw, dtype=float), np.zeros(n), price,
                      np.full(n, 0.05))


def _summary(steps: StepInputs, currency: str = "USD") -> PlanSummary:
    return summarize("home-001", ZONE, currency, steps.step_starts[0], steps, 2.0, 2.5, 2.2)


def test_slivers_between_blocks_of_one_action_fold_in_with_their_energy_kept():
    # store 08:15-10:45, discharge 10:45-11:00, store 11:00-11:15, discharge 11:15-11:45
    actions = ["store"] * 10 + ["discharge"] + ["store"] + ["discharge"] * 2
    power = [2.0] * 10 + [-1.0] + [2.0] + [-1.5] * 2
    summary = _summary(_steps(actions, power))
    assert [(b.action, b.window) for b in summary.blocks] == [("store", "Wed 08:15–11:15"),
                                                             ("discharge", "Wed 11:15–11:45")]
    assert summary.blocks[0].energy_kwh == pytest.approx((20.0 + 2.0 - 1.0) * 0.25)
    assert summary.blocks[1].energy_kwh == pytest.approx(0.75)


def test_a_block_that_moves_what_shows_as_no_energy_is_left_out_and_nothing_is_kept_for_it():
    """Store 08:15-10:45, a quarter hour at 0.1 kW of discharge, then the evening's discharge:
    the sliver ("discharge 0.0 kWh") is no action to take, and the store is kept for the evening."""
    actions = ["store"] * 10 + ["idle"] + ["discharge"] + ["idle"] * 24 + ["discharge"] * 8
    power = [2.0] * 10 + [0.0] + [-0.1] + [0.0] * 24 + [-1.5] * 8
    summary = _summary(_steps(actions, power))
    assert [(b.action, b.window) for b in summary.blocks] == [("store", "Wed 08:15–10:45"),
                                                             ("discharge", "Wed 17:15–19:15")]
    assert summary.blocks[0].reason.endswith("for the evening, when imports cost $0.30/kWh")
    assert "0.0 kWh" not in "\n".join(summary.lines())


def test_a_block_carries_its_heading_as_the_command_line_rounds_it():
    # 0.75 kWh and 0.25 kWh are ties at one decimal: Python rounds them to even (0.8, 0.2),
    # and every display must show what the command line shows; JavaScript's toFixed rounds
    # both up (0.8, 0.3).
    summary = _summary(_steps(["discharge"] * 3 + ["idle"] * 4 + ["buy"], [-1.0] * 3 + [0.0] * 4 + [1.0]))
    sent = json.loads(json.dumps(summary.to_dict()))
    assert [block["heading"] for block in sent["blocks"]] == ["Wed 08:15–09:00 discharge 0.8 kWh",
                                                              "Wed 10:00–10:15 buy 0.2 kWh"]


def test_short_blocks_between_different_actions_stay_and_every_block_says_why():
    actions = ["idle"] * 4 + ["buy"] * 2 + ["idle"] * 30 + ["discharge"] * 16
    power = [0.0] * 4 + [3.0] * 2 + [0.0] * 30 + [-2.0] * 16
    summary = _summary(_steps(actions, power, start="2024-06-12 08:00"))
    assert [b.action for b in summary.blocks] == ["buy", "discharge"]
    buy, discharge = summary.blocks
    assert buy.reason == "charge 1.5 kWh at $0.08/kWh to cover Wed 17:00–21:00 at $0.30/kWh"
    assert discharge.reason == "cover the home's load with 8.0 kWh instead of importing at $0.30/kWh"
    assert summary.next_action == "keep the battery idle until Wed 09:00, then charge from the grid until Wed 09:30"


def test_a_plan_of_past_days_reads_its_next_action_from_its_start():
    steps = _steps(["idle"] * 4 + ["buy"] * 2, [0.0] * 4 + [3.0] * 2, start="2012-07-06 08:00")
    summary = summarize("home-001", ZONE, "USD", pd.Timestamp("2026-01-01", tz="UTC"), steps, 2.0, 2.5, 2.2)
    assert summary.next_action == "keep the battery idle until Fri 09:00, then charge from the grid until Fri 09:30"


def test_a_store_block_says_which_evening_it_is_kept_for():
    actions = ["store"] * 8 + ["idle"] * 24 + ["discharge"] * 8
    power = [2.0] * 8 + [0.0] * 24 + [-2.0] * 8
    summary = _summary(_steps(actions, power, start="2024-06-12 11:00"))
    assert summary.blocks[0].reason.startswith("store 4.0 kWh of solar surplus (it would export at $0.05/kWh) "
                                               "for the evening")


@pytest.mark.parametrize(("country", "currency", "shown"), [
    ("US", None, "$1.24"), ("DE", None, "€1.24"), ("GB", None, "£1.24"), ("GB", "EUR", "€1.24"), ("CH", None, "CHF 1.24"),
])
def test_money_is_in_the_sites_currency(country, currency, shown):
    config = build_config({"country": country, "currency": currency})
    assert money(1.235, config.currency_code) == shown
    assert money(-0.5, config.currency_code) == "−" + shown.replace("1.24", "0.50")


def test_the_summary_survives_its_json():
    summary = _summary(_steps(["buy"] * 4 + ["discharge"] * 4, [2.0] * 4 + [-2.0] * 4))
    assert PlanSummary.from_dict(json.loads(json.dumps(summary.to_dict()))) == summary


# The Quick start, once per module: run_pipeline.py, then run_optimizer.py, in a fresh folder.

@pytest.fixture(scope="module")
def quick_start(quick_start_pipeline, tmp_path_factory):
    template, pipeline = quick_start_pipeline
    folder = copy_of(template, tmp_path_factory, "quick-start")
    optimizer = run_script("run_optimizer.py", cwd=folder)
    assert optimizer.returncode == 0, optimizer.stderr
    store = SQLiteCloudStore(folder / "data" / "cloud.db")
    yield folder, pipeline.stdout, optimizer.stdout, store
    store.close()


def _loaded(value) -> PlanSummary:
    return PlanSummary.from_dict(value if isinstance(value, dict) else json.loads(value))


def _stored_summaries(store) -> dict[str, PlanSummary]:
    """Per device, the newest stored summary."""
    frame = store.read_frame(s.PLAN_SUMMARIES).sort_values(s.ISSUED_AT)
    return {device: _loaded(rows[s.SUMMARY].iloc[-1])
            for device, rows in frame.groupby("device_id")}


def _block_text(block) -> str:
    return f"{block.window}  {block.action} {block.energy_kwh:.1f} kWh"


@pytest.mark.slow
def test_quick_start_plans_only_the_stores_sites_and_status_lists_only_them(quick_start):
    folder, _, optimizer, store = quick_start
    sites = sorted(row["device_id"] for row in store.sites())
    assert sites == ["home-001", "home-002", "home-003"]
    assert "edge-gateway-001" not in optimizer
    assert [line.split(":")[0] for line in optimizer.splitlines() if line.startswith(("home-", "edge-"))] == sites
    status = run_script("run_optimizer.py", "--status", "--json", cwd=folder)
    assert [plan["device_id"] for plan in json.loads(status.stdout)["plans"]] == sites


@pytest.mark.slow
def test_quick_start_blocks_and_savings_are_the_same_in_the_cli_and_the_api(quick_start):
    _, _, optimizer, store = quick_start
    client = TestClient(create_app(store))
    summaries = _stored_summaries(store)
    assert any(b.action == "discharge" for summary in summaries.values() for b in summary.blocks)
    for device, summary in summaries.items():
        cli = optimizer.split(f"{device}: ")[1].split("written to dispatch_plans")[0]
        api_plan = client.get(f"/api/sites/{device}/plan").json()["summary"]
        savings = client.get(f"/api/sites/{device}/savings").json()
        assert f"times in {summary.zone}, money in USD" in cli
        assert [(b["action"], b["window"], b["reason"]) for b in api_plan["blocks"]] == [
            (b.action, b.window, b.reason) for b in summary.blocks]
        for block in summary.blocks:
            assert block.reason and block.reason in cli and _block_text(block) in cli
        assert f"saves {summary.money(summary.savings)}:" in cli
        assert savings["savings_text"] == api_plan["savings_text"] == summary.money(summary.savings)
        assert savings["savings"] == summary.savings
        assert " kw" not in cli and " kwh" not in cli and "(tariff currency)" not in cli


@pytest.mark.slow
def test_the_pipelines_printout_shows_every_block_of_its_plans(quick_start):
    _, pipeline, _, store = quick_start
    assert re.search(r"\+\d+ more", pipeline) is None
    assert "(tariff currency)" not in pipeline
    first = store.read_frame(s.PLAN_SUMMARIES).sort_values(s.ISSUED_AT).groupby("device_id").head(1)
    for value in first[s.SUMMARY]:
        summary = _loaded(value)
        for block in summary.blocks:
            assert f"  {block.line()}" in pipeline
        assert summary.savings_line() in pipeline


def test_without_sites_the_optimizer_says_how_to_make_one(tmp_path):
    result = run_script("run_optimizer.py", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        ("error: no sites in the cloud store (sqlite:data/cloud.db) to plan; make some with python "
         "run_pipeline.py (or run_simulator.py and run_cloud_sync.py), declare one with run_cloud_sync.py --site FILE, "
         "or name one with --device-id or --config")]


def test_status_lists_only_the_stores_sites(tmp_path):
    from cloud.optimization.planner import plan_status
    from der_core.config import SimulatorConfig, site_record

    store = SQLiteCloudStore(tmp_path / "cloud.db")
    now = pd.Timestamp.now(tz="UTC").floor("15min")
    store.upsert_sites([site_record(SimulatorConfig(device_id="home-001"))])
    for device, issued in (("home-001", now), ("edge-gateway-001", now), ("old-config", now - pd.Timedelta(days=3))):
        run = store.start_run("optimizer", {"device_id": device, "forecaster": "naive"})  # as run_plan records it
        store.upsert_frame(s.PLANS, pd.DataFrame({"device_id": device, "ts": [issued], s.ISSUED_AT: issued,
                                                  "battery_power_kw": 0.0, "battery_soc_percent": 50.0,
                                                  "net_grid_flow_kw": 1.0, s.PLAN_PRICE: 0.1, s.EXPECTED_COST: 0.025,
                                                  s.OBJECTIVE: "optimal"}))
        store.finish_run(run, "ok", 1)
    report = plan_status(store, now - pd.Timedelta(days=1))
    store.close()
    assert [plan["device_id"] for plan in report["plans"]] == ["home-001"]
    assert report["plans_of_unknown_sites"] == ["edge-gateway-001"]  # a plan older than the window is not named


@pytest.mark.slow
def test_the_dashboard_lists_every_block_and_the_same_savings(quick_start, browser):  # noqa: F811
    from tests.test_dashboard_browser import _wait_for, serving

    _, _, optimizer, store = quick_start
    with serving(create_app(store)) as url:
        browser.get(f"{url}/?site=home-001")
        _wait_for(browser, lambda d: d.find_element("tag name", "body").get_attribute("data-loaded") == "home-001",
                  "home-001 to load")
        summary = _stored_summaries(store)["home-001"]
        items = browser.find_elements("css selector", "#next-actions li")
        assert [(i.get_attribute("data-action"), i.get_attribute("data-start")) for i in items] == [
            (b.action, b.start.isoformat()) for b in summary.blocks]
        texts = [i.text for i in items]
        assert texts == [f"{b.window} {b.action} {b.energy_kwh:.1f} kWh: {b.reason}" for b in summary.blocks]
        shown = browser.find_element("id", "savings").text
        assert shown == summary.money(summary.savings) and f"saves {shown}:" in optimizer.split("home-001: ")[1]
        assert browser.find_element("id", "savings-detail").text == summary.savings_line()
        zone = summary.start.tz_convert(summary.timezone).strftime("%Z")
        assert zone in browser.find_element("id", "status").text  # the header clock is site-local, zone named
        labels = browser.execute_script('return charts["chart-plan"].axes.map((axis) => axis.label || null);')
        assert "battery kW (+charge)" in labels and "USD/kWh" in labels


@pytest.mark.parametrize("bill, value, said", [
    (2.0, 0.0, "the battery's own rule $2.20 (the plan saves $0.20 more)"),
    (2.3, 0.0, "the battery's own rule $2.20 (the plan costs $0.10 more on this forecast)"),
    (2.3, 0.15, "counting the energy it adds to the battery as $0.15"),
    # Each bill is shown with the energy its battery ends with, so the figures add up: the
    # rule's $2.20 and the $0.15 it takes, against the plan's $2.30 less the $0.15 it adds.
    (2.3, 0.15, "the battery's own rule $2.20, counting the energy it takes from the battery as $0.15 "
                "(the plan saves $0.20 more)"),
])
def test_the_savings_line_says_which_way_the_plan_compares_with_the_rule(bill, value, said):
    steps = _steps(["store"] * 4, [2.0] * 4)
    summary = summarize("home-001", ZONE, "USD", steps.step_starts[0], steps, bill, 2.5, 2.2, value,
                        -value if value else 0.0)
    assert said in summary.savings_line()
    assert "-$" not in summary.savings_line() and "−" not in summary.savings_line()


def test_a_policy_dearer_on_the_one_forecast_says_it_is_sent_for_what_it_saves_over_what_it_hedges():
    """"The plan costs $0.10 more" above a line where the policy saves more over the bursts,
    and the plan sent: the owner read a plan dearer than the rule being sent."""
    steps = _steps(["store"] * 4, [2.0] * 4)
    summary = dataclasses.replace(summarize("home-001", ZONE, "USD", steps.step_starts[0], steps, 2.3, 2.5, 2.2),
                                  arrivals_cost=1.36, arrivals_cost_self_consumption=1.55, hedged="the household's bursts")
    assert summary.savings_line().endswith("(the plan costs $0.10 more on this forecast; it is sent for what it saves "
                                           "over the household's bursts, below)")
    assert summary.arrivals_line().endswith("(policy saves $0.19 more)")


def test_a_site_without_a_battery_is_told_its_bill_and_nothing_of_savings_or_a_rule():
    steps = _steps(["idle"] * 4, [0.0] * 4)
    summary = dataclasses.replace(summarize("home-001", ZONE, "EUR", steps.step_starts[0], steps, 2.5, 2.5, 2.5),
                                  next_action=NO_BATTERY)
    assert summary.savings_line() == "bill €2.50 (no battery: nothing to save)"
    assert PlanSummary.from_dict(summary.to_dict()).savings_line() == summary.savings_line()
    exporting = dataclasses.replace(summary, bill_without_battery=-0.77)  # PV sold above what was bought
    assert exporting.savings_line() == "a credit of €0.77 (no battery: nothing to save)"
    assert "battery idle" not in "\n".join(summary.lines())  # no battery to keep idle
    assert summary.lines()[1:] == [f"next: {NO_BATTERY}", "bill €2.50 (no battery: nothing to save)"]


def test_a_plan_across_a_clock_change_names_both_offsets():
    """A plan from midnight on the night clocks go back read all its local hours as PDT,
    though most of them were PST."""
    across = _summary(_steps(["idle"] * 96, [0.0] * 96, start="2024-11-03 00:00"))
    assert across.zone == "America/Los_Angeles (PDT, then PST)"
    assert "times in America/Los_Angeles (PDT, then PST)" in across.lines()[0]
    assert _summary(_steps(["idle"] * 4, [0.0] * 4)).zone == "America/Los_Angeles (PDT)"
