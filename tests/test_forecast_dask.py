"""Training on a Dask cluster through LightGBM's Dask interface, locally and from the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dask.distributed import get_task_stream

from cloud.forecasting import design as dz
from cloud.forecasting.models import KW_VIEW, LightGBMForecaster
from cloud.forecasting.targets import LOAD_KW
from cloud.forecasting.training import TrainSettings, design_rows
from cloud.forecasting.weather import SimulatedWeatherForecast
from tests.forecast_helpers import fleet, histories
from tests.test_forecast_cli import _workspace, cloud_db, run  # noqa: F401 - the fixture is shared

SMALL = {"n_estimators": 15}


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as local:
        with distributed.Client(local) as client:
            yield local, client


def test_a_cluster_trains_quantile_models_like_a_local_fit(cluster):
    _, client = cluster
    rows = design_rows(histories(*fleet(2, 16, seed=4)), LOAD_KW, TrainSettings(issue_every=pd.Timedelta(hours=12)),
                       SimulatedWeatherForecast())
    y = rows[dz.Y].to_numpy()
    with get_task_stream(client) as stream:
        remote = LightGBMForecaster(0.0, SMALL).fit(rows, y, client=client)
    local = LightGBMForecaster(0.0, SMALL).fit(rows, y)
    # Training ran on the cluster: each quantile model is one LightGBM training task on every
    # worker holding a share of the rows (Dask may place both shares on one worker).
    workers = set(client.scheduler_info()["workers"])
    trained_on = [task["worker"] for task in stream.data if _task_name(task["key"]) == "_train_part"]
    assert 3 <= len(trained_on) <= 3 * len(workers) and set(trained_on) <= workers
    assert [b.num_trees() for b in remote.boosters[KW_VIEW]] == [15, 15, 15]
    pred_remote, pred_local = remote.predict(rows), local.predict(rows)
    assert np.all(np.diff(pred_remote, axis=1) >= 0)
    # two workers each grow trees from their half of the rows: close to, not equal to, one fit
    remote_mae = np.mean(np.abs(pred_remote[:, 1] - y))
    assert remote_mae < 1.15 * np.mean(np.abs(pred_local[:, 1] - y))


def _task_name(key) -> str:
    """The function name a Dask task key starts with (keys are strings or tuples of them)."""
    return str(key[0] if isinstance(key, tuple) else key).split("-", 1)[0]


@pytest.mark.slow
def test_cli_trains_on_the_given_scheduler(cluster, tmp_path, cloud_db):  # noqa: F811
    local, _ = cluster
    cwd = _workspace(tmp_path, cloud_db)
    # A 6-hour horizon: a quarter of the rows, the same path through the scheduler.
    done = run("--train", "--scheduler", local.scheduler_address, "--horizon-hours", "6", cwd=cwd, timeout=600)
    assert done.returncode == 0, done.stderr
    assert (cwd / "trained_models" / "ACTIVE").exists() and "trained version" in done.stdout
