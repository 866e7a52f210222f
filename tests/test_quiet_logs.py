"""Success paths stay quiet: routine steps are not news (INFO is for what changed)."""

from __future__ import annotations

import logging
import socket
import warnings

import pytest

import run_portfolio
from cloud.store.sqlite import SQLiteCloudStore
from cloud.sync.job import SyncSettings, sync_once
from edge_gateway.stores.sqlite import SQLiteEdgeStore
from tests.sync_fixtures import readings


def test_sync_logs_synced_readings_only_when_some_are_new(tmp_path, caplog):
    with SQLiteEdgeStore(tmp_path / "edge.db") as edge, SQLiteCloudStore(tmp_path / "cloud.db") as cloud:
        edge.write(readings(devices=2, steps=12))
        caplog.set_level(logging.DEBUG, logger="cloud.sync.job")
        first = sync_once(edge, cloud, SyncSettings())
        again = sync_once(edge, cloud, SyncSettings())
    infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and "synced" in r.getMessage()]
    debugs = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG and "synced" in r.getMessage()]
    assert (first.rows_new, again.rows_new) == (24, 0)
    assert again.rows_synced > 0  # the overlap was re-sent, as it is on every run
    assert infos == [f"synced 24 readings of 2 devices (0 quarantined) to {cloud.label}"]
    assert debugs == [f"synced 0 readings of 2 devices (0 quarantined) to {cloud.label}"]


@pytest.mark.slow
def test_a_portfolio_run_prints_one_line_per_stage_and_no_dask_logs(in_tmp_cwd, capsys):
    code = run_portfolio.main(["--sites", "4", "--hours", "24", "--group-size", "2", "--strategies", "rule_based",
                               "--scenario", "none", "--output", "out", "--workers", "1"])
    captured = capsys.readouterr()
    assert code == 0
    assert captured.out.splitlines() == ["fleet: 4 sites drawn from seed 0 (bay-area)",
                                         "dask: 1 workers started",
                                         "simulated 4 sites x 24 h, strategies rule_based, on 1 partitions",
                                         "report in out/report.md"]
    assert "distributed" not in captured.err and "INFO" not in captured.err


@pytest.mark.slow
def test_a_portfolio_run_says_nothing_of_dask_ports_another_cluster_holds(in_tmp_cwd):
    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", 8787))  # Dask's default HTTP port, as another cluster would hold it
        holder.listen()
    except OSError:
        pass  # already held by someone else: the same condition
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            code = run_portfolio.main(["--sites", "2", "--hours", "24", "--strategies", "rule_based", "--scenario", "none",
                                       "--output", "out", "--workers", "1"])
    finally:
        holder.close()
    assert code == 0
    assert not [w for w in caught if "already in use" in str(w.message)], [str(w.message) for w in caught]
