"""Site histories from any cloud store: each site's readings on the forecasting grid."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import pandas as pd

from cloud.forecasting.design import PROFILE_DAYS, SiteHistory, site_history
from cloud.forecasting.targets import days_held
from cloud.forecasting.training import NotEnoughData
from cloud.store.base import CloudStore
from der_core import der_data as dd
from der_core.site_file import unreadable

log = logging.getLogger(__name__)

NO_SITE_ROW = "no row in sites (location, time zone and PV system unknown)"


def how_to_get_data(days: float) -> str:
    return (f"at least {days:g} days of readings per site are needed; generate them with "
            "`python run_simulator.py --historical --start 2024-01-01 --end 2024-03-01 --sites 20` "
            "and ship them with `python run_cloud_sync.py --once` (or import meter files with "
            "`python run_cloud_sync.py --import FILE --device-id ID`)")


def load_histories(store: CloudStore, step: pd.Timedelta, max_gap: pd.Timedelta, min_days: float,
                   device_ids: Sequence[str] | None = None, days: float | None = None) -> list[SiteHistory]:
    """Every site with a ``sites`` row and readings (the newest ``days`` of them plus a week of
    lags when given). Raises :class:`NotEnoughData`, saying how to get data, when no site has
    ``min_days``."""
    sites = {row[dd.DEVICE_ID]: row for row in store.sites()}
    stats = store.reading_stats()
    wanted = sorted(stats) if device_ids is None else [d for d in device_ids if d in stats]
    if not wanted:
        raise NotEnoughData(f"{store.label} holds no readings{' for ' + ', '.join(device_ids) if device_ids else ''}; "
                            + how_to_get_data(min_days))
    longest = max((stats[d]["last_ts"] - stats[d]["first_ts"]) / pd.Timedelta(days=1) for d in wanted)
    if longest < min_days:
        raise NotEnoughData(f"{store.label} holds at most {days_held(longest)} days of readings for a site "
                            f"({len(wanted)} sites); " + how_to_get_data(min_days))
    histories = []
    for device in wanted:
        why = NO_SITE_ROW if device not in sites else unreadable(sites[device])
        if why is not None:  # one site's row, not every site's models
            log.warning("%s: skipped, %s", device, why)
            continue
        start = None
        if days is not None:
            start = pd.Timestamp(stats[device]["last_ts"]) - pd.Timedelta(days=days + PROFILE_DAYS + 1)
        readings = store.read_readings(device, start, None)
        if not readings.empty:
            histories.append(site_history(readings, sites[device], step, max_gap))
    if not histories:
        raise NotEnoughData(f"{store.label}: none of the sites with readings has a row in sites; "
                            "the sync job writes it from the gateway's configuration")
    return histories
