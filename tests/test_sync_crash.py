"""Exactly once, for real: ``run_cloud_sync.py`` processes are SIGKILLed at random moments
(seeded, so the schedule is reproducible) while the edge store keeps receiving readings,
and the cloud (the real Postgres of DATABASE_URL) goes away and comes back. After a final
clean run the cloud holds every edge reading exactly once, equal field by field."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from psycopg.conninfo import conninfo_to_dict

from cloud.store.postgres import PostgresCloudStore
from edge_gateway.stores.sqlite import SQLiteEdgeStore
from tests.fakes.tcp_proxy import TcpProxy
from tests.pg_fixtures import pg_url, truncate_all, with_address, wrong_port_url  # noqa: F401  (fixture)
from tests.sync_fixtures import assert_same_readings, readings

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
# A backlog large enough that a sync takes seconds of writing on any machine, so kills timed
# from the first rows it writes land mid-run however fast the machine is.
DEVICES, HISTORY_STEPS, FUTURE_STEPS = 3, 20_000, 3000
STEP = pd.Timedelta(minutes=5)


@pytest.fixture(scope="module")
def all_readings() -> pd.DataFrame:
    """History already on the edge, then the steps the writer adds while syncs run."""
    return readings(DEVICES, HISTORY_STEPS + FUTURE_STEPS, seed=1)


class EdgeWriter:
    """Appends the next step of every device every ``period_s`` from another thread, as a
    gateway keeps doing while the sync runs (and dies)."""

    def __init__(self, path: Path, frame: pd.DataFrame, period_s: float = 0.02) -> None:
        self.path, self.period_s = path, period_s
        first = frame["ts"].min() + HISTORY_STEPS * STEP
        self.steps = [group for _, group in frame[frame["ts"] >= first].groupby("ts")]
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.written = 0

    def _run(self) -> None:
        with SQLiteEdgeStore(self.path) as edge:
            for step in self.steps:
                if self.stop_event.is_set():
                    return
                edge.write(step)
                self.written += 1
                time.sleep(self.period_s)

    def __enter__(self) -> EdgeWriter:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join()


@pytest.fixture
def edge_path(tmp_path, pg_url, all_readings):  # noqa: F811
    truncate_all_if_present(pg_url)
    path = tmp_path / "edge.db"
    with SQLiteEdgeStore(path) as edge:
        edge.write(all_readings[all_readings["ts"] < all_readings["ts"].min() + HISTORY_STEPS * STEP])
    return path


def truncate_all_if_present(url: str) -> None:
    with PostgresCloudStore(url) as cloud:
        cloud.init_schema()
    truncate_all(url)


def sync_process(mode: list[str], edge_path: Path, database_url: str) -> subprocess.Popen:
    env = {**os.environ, "DATABASE_URL": database_url, "SYNC_BATCH_SIZE": "250", "CI": "true"}
    for name in ("SUPABASE_URL", "SUPABASE_KEY", "INFLUXDB_TOKEN"):
        env.pop(name, None)
    return subprocess.Popen([sys.executable, str(ROOT / "run_cloud_sync.py"), *mode, "--quiet",
                             "--edge-store", str(edge_path)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def kill_at_random(process: subprocess.Popen, rng: np.random.Generator, low: float, high: float) -> bool:
    """SIGKILL after a random delay; True when the process was still working when killed."""
    time.sleep(rng.uniform(low, high))
    alive = process.poll() is None
    process.kill()
    process.wait()
    return alive


def kill_while_writing(process: subprocess.Popen, cloud: PostgresCloudStore, rng: np.random.Generator,
                       high: float) -> bool:
    """SIGKILL at a random moment within ``high`` seconds of the process's first rows landing
    in the cloud; True when it was still alive then (so the kill cut a sync mid-write)."""
    before = cloud.count_readings()
    deadline = time.monotonic() + 60
    while process.poll() is None and cloud.count_readings() == before and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, high))
    alive = process.poll() is None
    process.kill()
    process.wait()
    return alive


def final_clean_run_and_compare(edge_path: Path, url: str) -> None:
    done = sync_process(["--once"], edge_path, url)
    _, err = done.communicate(timeout=120)
    assert done.returncode == 0, err.decode()
    with SQLiteEdgeStore(edge_path) as edge, PostgresCloudStore(url) as cloud:
        assert_same_readings(cloud.read_readings(), edge.read_range(None))


def test_sigkill_at_random_moments_while_the_edge_keeps_writing(edge_path, pg_url, all_readings):  # noqa: F811
    rng = np.random.default_rng(20240601)
    killed_mid_write = 0
    with EdgeWriter(edge_path, all_readings) as writer, PostgresCloudStore(pg_url) as cloud:
        # Anywhere in a run, start-up included; then deliberately while rows are in flight.
        kill_at_random(sync_process(["--once"], edge_path, pg_url), rng, 0.2, 2.0)
        for _ in range(4):
            killed_mid_write += kill_while_writing(sync_process(["--once"], edge_path, pg_url), cloud, rng, 0.3)
        for _ in range(2):
            process = sync_process(["--continuous", "--interval", "0.3"], edge_path, pg_url)
            kill_at_random(process, rng, 1.0, 3.5)
    assert killed_mid_write >= 3, f"only {killed_mid_write} of 4 kills cut a sync mid-write"
    assert writer.written > 100  # and the edge kept receiving readings meanwhile
    final_clean_run_and_compare(edge_path, pg_url)


def test_cloud_unreachable_for_a_while_then_back(edge_path, pg_url, all_readings):  # noqa: F811
    rng = np.random.default_rng(7)
    info = conninfo_to_dict(pg_url)
    proxy = TcpProxy(info.get("host", "127.0.0.1"), int(info.get("port", 5432)))
    proxy.start()
    via_proxy = with_address(pg_url, "127.0.0.1", proxy.port)
    with EdgeWriter(edge_path, all_readings):
        # A wrong port from the start: every attempt fails, nothing is confirmed, nothing lost.
        wrong = sync_process(["--continuous", "--interval", "0.5"], edge_path, wrong_port_url(pg_url))
        kill_at_random(wrong, rng, 1.5, 2.5)
        # The server goes away in the middle of a run and comes back: the same process recovers.
        process = sync_process(["--continuous", "--interval", "0.5"], edge_path, via_proxy)
        time.sleep(rng.uniform(1.5, 2.5))
        proxy.stop()
        time.sleep(1.5)
        proxy.start()
        with SQLiteEdgeStore(edge_path) as edge:
            back_at = edge.read_range(None)["ts"].max()
        caught_up = wait_until_synced(pg_url, back_at, timeout_s=30)
        assert process.poll() is None, "the continuous sync must survive the outage"
        process.kill()
        process.wait()
    proxy.stop()
    assert caught_up, "the continuous sync did not catch up after the cloud came back"
    final_clean_run_and_compare(edge_path, pg_url)


def wait_until_synced(url: str, newest: pd.Timestamp, timeout_s: float) -> bool:
    """True once the cloud holds, for every device, readings up to ``newest``."""
    deadline = time.monotonic() + timeout_s
    with PostgresCloudStore(url) as cloud:
        while time.monotonic() < deadline:
            stats = cloud.reading_stats()
            if len(stats) == DEVICES and all(v["last_ts"] >= newest for v in stats.values()):
                return True
            time.sleep(0.2)
    return False
