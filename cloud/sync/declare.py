"""Declaring a real site in the cloud store (``run_cloud_sync.py --site``, ``run_pipeline.py
--site``): its ``sites`` row, and what was made from an earlier declaration of it.

Every job reads a declared site from its row when it runs, so the planner's battery and
tariff, a backtest's and the forecasts follow a new declaration by themselves. The features
do not: the feature job writes each instant once (and its last hour again), so the history
written before keeps the zone, country, place and panels of the declaration it was written
under. When the declaration changes any of those, the site's features are written again
from its first reading (``cloud.feature_engineering.job.rewind``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from cloud.feature_engineering.job import rewind
from cloud.store import schema as s
from cloud.store.base import CloudStore
from der_core import der_data as dd
from der_core.errors import ConfigError
from der_core.site_file import SiteDeclaration, declared_site, site_row


def feature_inputs(site: SiteDeclaration) -> tuple[Any, ...]:
    """What of a declaration the features are made from: the local calendar (zone and
    holidays) and the clear-sky output of the panels at the place."""
    return site.location, site.timezone, site.country, site.pv


def _stored(row: Mapping[str, Any]) -> SiteDeclaration | None:
    try:
        return declared_site(row)
    except ConfigError:  # a stored declaration this version no longer reads: what it fed is unknown
        return None


def declare_sites(store: CloudStore, sites: Sequence[SiteDeclaration]) -> dict[str, list[str]]:
    """Store each site's row; per site whose features are to be written again (see the
    module), the feature versions rewound."""
    rows = {row.get(dd.DEVICE_ID): row for row in store.sites()}
    changed = [site for site in sites if site.device_id in rows
               and ((before := _stored(rows[site.device_id])) is None or feature_inputs(before) != feature_inputs(site))]
    stats = store.reading_stats() if changed else {}
    rewound = {}
    for site in changed:  # rewound first: should storing the rows fail, the next run rewinds again
        first = stats.get(site.device_id, {}).get(s.FIRST_TS)
        if first is not None and (moved := rewind(store, site.device_id, dd.parse_ts(first))):
            rewound[site.device_id] = moved
    store.upsert_sites([site_row(site) for site in sites])
    return rewound
