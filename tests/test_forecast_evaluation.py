"""Which rows ``--evaluate`` scores, per site, when sites' readings end at different times."""

from __future__ import annotations

import pandas as pd

from cloud.forecasting import design as dz
from cloud.forecasting.evaluation import newest_rows
from der_core import der_data as dd


def _rows(device: str, first: str, days: int) -> pd.DataFrame:
    issued = pd.date_range(first, periods=4 * days, freq="6h", tz="UTC")
    return pd.DataFrame({dd.DEVICE_ID: device, dz.ISSUED_AT: issued, dz.TARGET_TS: issued + pd.Timedelta(hours=1)})


def test_a_site_whose_readings_ended_before_the_training_range_is_still_scored_on_its_newest_week():
    """Two homes trained together, one measured in 2008 and one in 2012: the 2012 home has
    forecasts issued after the training range, the 2008 home cannot; each is scored on its
    own newest week, the 2012 home on what training never saw."""
    old, new = _rows("sceaux", "2008-05-01", 70), _rows("golden", "2012-06-01", 35)
    trained_until = pd.Timestamp("2012-07-01", tz="UTC")
    starts = {"sceaux": old[dz.ISSUED_AT].max() - pd.Timedelta(days=7),
              "golden": new[dz.ISSUED_AT].max() - pd.Timedelta(days=7)}
    scored = newest_rows(pd.concat([old, new], ignore_index=True), starts, trained_until)
    by_site = scored.groupby(dd.DEVICE_ID)[dz.ISSUED_AT]
    assert set(by_site.groups) == {"sceaux", "golden"}
    assert by_site.min()["golden"] >= trained_until
    assert by_site.min()["sceaux"] >= starts["sceaux"] and by_site.count()["sceaux"] == 4 * 7 + 1
