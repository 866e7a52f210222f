"""The gateway's state file: what it writes reads back to the same bytes, files saved before
the control kept a memory still load, and an unreadable file is set aside, not fatal."""

from __future__ import annotations

import json
import logging

import pandas as pd

from der_core.config import build_config
from der_core.control import SiteMemory
from edge_gateway.gateway import Gateway
from edge_gateway.state_file import GatewayState, SiteSnapshot, StateFile

AT = pd.Timestamp("2024-06-15T18:00:00+00:00")
BATTERY = {"energy_kwh": 6.5, "throughput_kwh": 120.25, "temperature_celsius": 24.5, "age_h": 300.0}
#: As the pipeline's simulator wrote them before the control kept a memory: no "memory" keys.
WITHOUT_MEMORY = {"ts": "2024-06-15T18:00:00+00:00", "state": BATTERY,
                  "previous": {"ts": "2024-06-15T17:45:00+00:00", "state": BATTERY}}


def test_a_saved_state_reads_back_to_the_same_bytes(tmp_path):
    site = build_config({"seed": 3, "device_id": "site", "interval_seconds": 900})
    gateway = Gateway([site], state_dir=tmp_path)
    for k in range(8):  # sessions and the month's peak in the memory, a previous step with one
        gateway.step(AT + pd.Timedelta(minutes=15 * k))
    text = (tmp_path / "site.json").read_text()
    state = StateFile(tmp_path, "site").load()
    assert isinstance(state.latest.memory, SiteMemory) and state.previous.memory is not None
    assert json.dumps(state.to_dict()) == text
    assert list(json.loads(text)) == ["ts", "state", "memory", "energy", "previous"]


def test_a_state_saved_without_memory_loads_and_is_saved_with_none(tmp_path):
    (tmp_path / "site.json").write_text(json.dumps(WITHOUT_MEMORY))
    state = StateFile(tmp_path, "site").load()
    assert state == GatewayState(SiteSnapshot(AT, BATTERY), SiteSnapshot(AT - pd.Timedelta(minutes=15), BATTERY))
    assert state.latest.memory_to_step() == SiteMemory()
    StateFile(tmp_path, "copy").save(state)
    assert json.loads((tmp_path / "copy.json").read_text()) == WITHOUT_MEMORY | {
        "memory": None, "energy": None, "previous": WITHOUT_MEMORY["previous"] | {"memory": None, "energy": None}}
    assert not list(tmp_path.glob("*.tmp"))


def test_the_memory_a_step_changes_is_a_copy_of_the_saved_one():
    memory = SiteMemory()
    memory.observe(AT, "UTC", ev_kw=7.2, grid_kw=8.4)
    snapshot = SiteSnapshot(AT, BATTERY, memory)
    stepped = snapshot.memory_to_step()
    stepped.observe(AT + pd.Timedelta(minutes=15), "UTC", ev_kw=0.0, grid_kw=9.9)
    assert snapshot.memory.peak_import_kw == 8.4 and snapshot.memory.charging
    assert stepped.peak_import_kw == 9.9 and not stepped.charging


def test_a_missing_file_is_no_state_and_an_unreadable_one_is_set_aside(tmp_path, caplog):
    assert StateFile(tmp_path, "none").load() is None
    (tmp_path / "torn.json").write_text('{"ts": "2024-06-15T18:00:00+00:00", "sta')
    with caplog.at_level(logging.WARNING):
        assert StateFile(tmp_path, "torn").load() is None
    assert "ignoring unreadable state" in caplog.text
