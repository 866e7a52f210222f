"""The accuracy bar on a simulated fleet (20 sites x 60 days, fixed seeds): LightGBM's
day-ahead MAE beats seasonal naive (same time yesterday) by at least 25 % for load and 40 % for
PV in daylight, and its P10-P90 band holds 70-90 % of the truths on the held-out last 20 %."""

from __future__ import annotations

import pandas as pd
import pytest

from cloud.forecasting.evaluation import headline
from cloud.forecasting.models import PRIMARY, REFERENCE, SeasonalNaiveWeek
from cloud.forecasting.targets import LOAD_KW, SOLAR_KW
from cloud.forecasting.training import TrainSettings, train_target
from cloud.forecasting.weather import SimulatedWeatherForecast
from tests.forecast_helpers import fleet, histories

MARGINS = {LOAD_KW: 0.25, SOLAR_KW: 0.40}


@pytest.fixture(scope="module")
def fleet_histories():
    return histories(*fleet(20, 60, seed=2024))


@pytest.mark.slow
@pytest.mark.parametrize("target", [LOAD_KW, SOLAR_KW])
def test_lightgbm_beats_seasonal_naive_with_calibrated_bands(fleet_histories, target):
    settings = TrainSettings(issue_every=pd.Timedelta(hours=8), test_size=0.2, backtest_folds=0,
                             models=(REFERENCE, SeasonalNaiveWeek.kind, PRIMARY))
    result = train_target(fleet_histories, target, settings, SimulatedWeatherForecast())
    ours = headline(result.metrics[PRIMARY], target)
    naive = headline(result.metrics[REFERENCE], target)
    weekly = headline(result.metrics[SeasonalNaiveWeek.kind], target)
    print(f"{target}: LightGBM MAE {ours['mae']:.4f}, naive {naive['mae']:.4f} (skill {ours['skill']:.3f}), "
          f"weekly naive {weekly['mae']:.4f}, P10-P90 coverage {ours['coverage_p10_p90']:.3f}, rows {ours['rows']}")
    assert len(result.sites) == 20 and result.test_range[1] - result.test_range[0] >= pd.Timedelta(days=10)
    assert ours["mae"] <= (1 - MARGINS[target]) * naive["mae"]
    assert ours["mae"] < weekly["mae"]
    assert 0.70 <= ours["coverage_p10_p90"] <= 0.90
