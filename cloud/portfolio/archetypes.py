"""Archetype cache: fast annual-cost estimates for very large portfolios.

Archetype = (PV or not, battery or not, EV or not, HVAC class, tariff). Each is fully
simulated once per strategy at a reference site (region centre, south-facing 20 degrees, load
scale 1) on a grid of size breakpoints: PV per unit of load scale ``x = pv_kw / L`` and
battery per unit of load scale ``y = battery_kwh / L``.

Scaling law. A house's load components scale with ``L`` (base, peak and HVAC are all
multiplied by it) and PV output with its size, and the battery's rates scale with its
capacity, so a bill is homogeneous of degree one in (load, PV, battery):

    C(L, P, B) ~= L * C_ref(f P / L, B / L)

where ``f`` is the site's orientation factor: the clear-sky annual yield of its azimuth and
tilt over the reference's (simulator's own PV model, tabulated on a 15 degree x 5 degree grid).
The EV charger is a fixed 7.2 kW whatever the house, so an EV's increment is added unscaled:
``C = L * C_noev(x, y) + (C_ev(x, y) - C_noev(x, y))``. ``C_ref`` may average several
weather/appliance seeds (``REFERENCE_DRAWS``) and is interpolated bilinearly between breakpoints (linearly past the last one).
Weather and appliance randomness and location
do not scale and are the law's error, measured against full simulation.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from cloud.portfolio.engine import RunSpec, run_portfolio
from cloud.portfolio.fleet import (
    HVAC_CLASSES,
    HVAC_KW,
    REGIONS,
    TARIFFS,
    Fleet,
    SiteSpec,
)
from cloud.portfolio.scenario import SCENARIOS
from der_core.config import SolarConfig
from der_physics import solar

AZIMUTHS = tuple(float(a) for a in range(60, 301, 15))
TILTS = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0)
PV_PER_L = (0.0, 3.0, 6.0, 10.0)
BATTERY_PER_L = (0.0, 5.0, 12.0, 20.0)
CACHED_STRATEGIES = ("no_battery", "rule_based")
REFERENCE_DRAWS = 1


def archetype_key(has_pv: np.ndarray, has_battery: np.ndarray, has_ev: np.ndarray, tariff: np.ndarray) -> np.ndarray:
    return np.char.add(np.char.add(np.char.add(np.where(has_pv, "pv-", "nopv-"), np.where(has_battery, "bat-", "nobat-")),
                                   np.where(has_ev, "ev-", "noev-")), tariff.astype(str))


def reference_sites(region: str, seed: int) -> list[SiteSpec]:
    centre = REGIONS[region]
    sites = []
    grid = itertools.product(range(REFERENCE_DRAWS), (False, True), HVAC_CLASSES, TARIFFS, PV_PER_L, BATTERY_PER_L)
    for draw, has_ev, hvac, tariff, x, y in grid:
        sites.append(SiteSpec(f"ref-{len(sites):03d}", centre["latitude"], centre["longitude"], 1.0, HVAC_KW * hvac, x, 180.0, 20.0,
                              y, round(y * 0.37, 2), has_ev, tariff, seed + draw))
    return sites


@dataclass(frozen=True)
class ArchetypeCache:  # noqa: D101 - see the module docstring
    """Annual cost per (EV, HVAC class, tariff, strategy) on the (PV/L, battery/L) grid."""

    table: dict[tuple[bool, float, str, str], np.ndarray]  # -> (len(PV_PER_L), len(BATTERY_PER_L))
    hours: int
    orientation: np.ndarray  # yield factor on (AZIMUTHS, TILTS)

    def estimate(self, sites: pd.DataFrame, strategy: str) -> np.ndarray:
        """Vectorised estimate for a frame with load_scale, pv_kw, battery_kwh, has_ev, tariff."""
        L = sites["load_scale"].to_numpy(float)
        factor = orientation_factor(self.orientation, sites["azimuth_deg"].to_numpy(float), sites["tilt_deg"].to_numpy(float))
        x, y = factor * sites["pv_kw"].to_numpy(float) / L, sites["battery_kwh"].to_numpy(float) / L
        out = np.empty(len(sites))
        hvac_class = HVAC_CLASSES[np.abs(sites["hvac_kw"].to_numpy(float)[:, None] / (HVAC_KW * L[:, None]) - HVAC_CLASSES).argmin(axis=1)]
        has_ev = sites["has_ev"].to_numpy(bool)
        for (ev, hvac, tariff, name), grid in self.table.items():
            if name != strategy or ev:
                continue
            rows = (hvac_class == hvac) & (sites["tariff"].to_numpy() == tariff)
            out[rows] = L[rows] * _bilinear(grid, x[rows], y[rows])
            ev_rows = rows & has_ev
            with_ev = self.table[(True, hvac, tariff, name)]
            out[ev_rows] += _bilinear(with_ev, x[ev_rows], y[ev_rows]) - _bilinear(grid, x[ev_rows], y[ev_rows])
        return out


def _axis_weights(axis: tuple[float, ...], v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(axis)
    i = np.clip(np.searchsorted(a, v, side="right") - 1, 0, len(a) - 2)
    return i, (v - a[i]) / (a[i + 1] - a[i])  # beyond the last breakpoint: linear extrapolation


def _bilinear(grid: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    i, fx = _axis_weights(PV_PER_L, x)
    j, fy = _axis_weights(BATTERY_PER_L, y)
    return ((1 - fx) * (1 - fy) * grid[i, j] + fx * (1 - fy) * grid[i + 1, j]
            + (1 - fx) * fy * grid[i, j + 1] + fx * fy * grid[i + 1, j + 1])


def orientation_table(region: str, year_start: pd.Timestamp) -> np.ndarray:
    """Clear-sky annual yield of each (azimuth, tilt) relative to south at 20 degrees."""
    centre = REGIONS[region]
    times = pd.date_range(year_start, periods=365 * 8, freq="3h")
    table = np.empty((len(AZIMUTHS), len(TILTS)))
    for (i, az), (j, tilt) in itertools.product(enumerate(AZIMUTHS), enumerate(TILTS)):
        config = SolarConfig(capacity_kw=1.0, latitude=centre["latitude"], longitude=centre["longitude"],
                             azimuth_degrees=az, tilt_degrees=tilt)
        table[i, j] = float(np.sum(solar.clearsky_ac_kw(config, times)))
    return table / table[AZIMUTHS.index(180.0), TILTS.index(20.0)]


def orientation_factor(table: np.ndarray, azimuth: np.ndarray, tilt: np.ndarray) -> np.ndarray:
    i, fi = _axis_weights(AZIMUTHS, np.clip(azimuth, AZIMUTHS[0], AZIMUTHS[-1]))
    j, fj = _axis_weights(TILTS, np.clip(tilt, TILTS[0], TILTS[-1]))
    return ((1 - fi) * (1 - fj) * table[i, j] + fi * (1 - fj) * table[i + 1, j]
            + (1 - fi) * fj * table[i, j + 1] + fi * fj * table[i + 1, j + 1])


def build_cache(times: pd.DatetimeIndex, region: str = "bay-area", seed: int = 0, partitions: int = 1, mapper=None) -> ArchetypeCache:
    """Simulate every reference site under every cached strategy (one fleet run)."""
    sites = reference_sites(region, seed)
    spec = RunSpec(Fleet(tuple(sites), region, len(sites)), times, CACHED_STRATEGIES, SCENARIOS["none"], seed)
    parts, _ = run_portfolio(spec, partitions, *(() if mapper is None else (mapper,)))
    bills = {k: np.concatenate([p.sites[k]["bill"] for p in sorted(parts, key=lambda p: p.first)]) for k in CACHED_STRATEGIES}
    table = {}
    for name in CACHED_STRATEGIES:
        for k, site in enumerate(sites):
            hvac = float(HVAC_CLASSES[np.abs(site.hvac_kw / HVAC_KW - HVAC_CLASSES).argmin()])
            grid = table.setdefault((site.has_ev, hvac, site.tariff, name), np.zeros((len(PV_PER_L), len(BATTERY_PER_L))))
            grid[PV_PER_L.index(site.pv_kw), BATTERY_PER_L.index(site.battery_kwh)] += bills[name][k] / REFERENCE_DRAWS
    return ArchetypeCache(table, len(times), orientation_table(region, times[0]))


def sites_frame(sites) -> pd.DataFrame:
    return pd.DataFrame([{"site_id": s.site_id, "load_scale": s.load_scale, "pv_kw": s.pv_kw, "battery_kwh": s.battery_kwh,
                          "hvac_kw": s.hvac_kw, "azimuth_deg": s.azimuth_deg, "tilt_deg": s.tilt_deg, "has_ev": s.has_ev, "tariff": s.tariff} for s in sites])


def held_out_error(cache: ArchetypeCache, sample: Fleet, times: pd.DatetimeIndex, strategy: str, partitions: int = 1,
                   mapper=None) -> dict[str, float]:
    """Mean absolute error of estimated against fully simulated annual cost, as a share of the
    sample's mean absolute cost (a per-site relative error explodes where PV nets a bill to ~0)."""
    spec = RunSpec(replace(sample, group_size=len(sample)), times, (strategy,), SCENARIOS["none"], 0)
    parts, _ = run_portfolio(spec, partitions, *(() if mapper is None else (mapper,)))
    full = np.concatenate([p.sites[strategy]["bill"] for p in sorted(parts, key=lambda p: p.first)])
    estimate = cache.estimate(sites_frame(sample.sites), strategy)
    mae = float(np.mean(np.abs(estimate - full)))
    return {"mae": mae, "mae_share": mae / float(np.mean(np.abs(full))), "sites": len(full),
            "total_error_share": float(abs(estimate.sum() - full.sum()) / abs(full.sum()))}
