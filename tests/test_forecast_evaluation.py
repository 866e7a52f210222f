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
    scored = newest_rows(pd.concat([old, new], ignore_index=True), starts, {"sceaux": trained_until, "golden": trained_until})
    by_site = scored.groupby(dd.DEVICE_ID)[dz.ISSUED_AT]
    assert set(by_site.groups) == {"sceaux", "golden"}
    assert by_site.min()["golden"] >= trained_until
    assert by_site.min()["sceaux"] >= starts["sceaux"] and by_site.count()["sceaux"] == 4 * 7 + 1


def test_each_site_is_scored_past_its_own_training_not_the_fleets():
    """Each site is split at its own time: the 2008 home's training ended in 2008, so its
    newest week is unseen by the models and scored as such, whatever the 2012 home's range."""
    old, new = _rows("sceaux", "2008-05-01", 70), _rows("golden", "2012-06-01", 35)
    trained = {"sceaux": old[dz.ISSUED_AT].max() - pd.Timedelta(days=3),
               "golden": new[dz.ISSUED_AT].max() - pd.Timedelta(days=3)}
    starts = {d: t - pd.Timedelta(days=4) for d, t in trained.items()}
    scored = newest_rows(pd.concat([old, new], ignore_index=True), starts, trained)
    assert scored.groupby(dd.DEVICE_ID)[dz.ISSUED_AT].min().to_dict() == trained


def test_a_manifest_gives_each_site_its_own_range_and_an_older_one_the_targets():
    from cloud.forecasting.registry import site_range

    entry = {"train_range": ["2008-05-01 00:15:00+00:00", "2012-06-20 00:00:00+00:00"],
             "test_range": ["2008-06-20 00:15:00+00:00", "2012-07-06 00:00:00+00:00"],
             "site_ranges": {"sceaux": ["2008-06-24 00:00:00+00:00", "2008-07-10 00:00:00+00:00"]}}
    assert site_range(entry, "sceaux") == (pd.Timestamp("2008-06-24", tz="UTC"), pd.Timestamp("2008-07-10", tz="UTC"))
    assert site_range(entry, "golden") == (pd.Timestamp("2012-06-20", tz="UTC"), pd.Timestamp("2012-07-06", tz="UTC"))
