"""Training on a Dask cluster through LightGBM's Dask interface, locally and from the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cloud.forecasting import design as dz
from cloud.forecasting.models import LightGBMForecaster
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
    remote = LightGBMForecaster(0.0, SMALL).fit(rows, y, client=client)
    local = LightGBMForecaster(0.0, SMALL).fit(rows, y)
    assert [b.num_trees() for b in remote.boosters] == [15, 15, 15]
    pred_remote, pred_local = remote.predict(rows), local.predict(rows)
    assert np.all(np.diff(pred_remote, axis=1) >= 0)
    # two workers each grow trees from their half of the rows: close to, not equal to, one fit
    remote_mae = np.mean(np.abs(pred_remote[:, 1] - y))
    assert remote_mae < 1.15 * np.mean(np.abs(pred_local[:, 1] - y))


@pytest.mark.slow
def test_cli_trains_on_the_given_scheduler(cluster, tmp_path, cloud_db):  # noqa: F811
    local, _ = cluster
    cwd = _workspace(tmp_path, cloud_db)
    done = run("--train", "--scheduler", local.scheduler_address, cwd=cwd, timeout=600)
    assert done.returncode == 0, done.stderr
    assert (cwd / "trained_models" / "ACTIVE").exists() and "trained version" in done.stdout
