"""A fleet of prosumers: documented distributions drawn from a seed, or a CSV of real sites.

Every site becomes an ``der_core.config.SimulatorConfig`` so the simulators' physics
applies unchanged (DESIGN.md, "One physics"). Distributions (one draw per site, in this order,
from ``numpy.random.default_rng([seed, 0xF1EE7])``):

* location: uniform over a disc of ``radius_deg`` around the region's centre (one time zone);
* load scale ``L``: lognormal, median 1, sigma 0.25, clipped to [0.5, 2]. It multiplies the
  base load (0.5 kW), the house's peak (8 kW) and the HVAC unit (3.5 kW x HVAC class);
* HVAC class: none (10 %), small x0.6 (30 %), standard x1 (45 %), large x1.5 (15 %);
* PV: 70 % of sites; size ``L`` x lognormal(median 5 kWp, sigma 0.3) clipped to [1.5, 15];
  azimuth normal(180, 30) degrees, tilt uniform 10-35 degrees; sites without PV get 0 kWp;
* battery: 60 % of PV sites and 10 % of the others; capacity 5 / 10 / 13.5 / 20 kWh
  (weights 0.2 / 0.35 / 0.3 / 0.15), power 0.37 C (13.5 kWh -> 5 kW); capacity 0 means none;
* EV: 35 % of sites, 7.2 kW charger;
* tariff: ``tou`` (0.08 / 0.15 / 0.30 per kWh, feed-in 0.05) for 70 %, ``flat`` (0.15 / 0.16
  / 0.18, feed-in 0.07) for the rest.

Coordination groups (``group_size`` consecutive sites) are the unit the central aggregator
plans jointly; Dask partitions are made of whole groups, so partitioning never changes a plan.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from der_core import der_data as dd
from der_core.config import SimulatorConfig, build_config
from der_core.errors import ConfigError
from der_core.files import input_problem

REGIONS = {
    "bay-area": {"latitude": 37.55, "longitude": -122.10, "timezone": "America/Los_Angeles", "country": "US", "currency": "USD"},
    "texas": {"latitude": 30.27, "longitude": -97.74, "timezone": "America/Chicago", "country": "US", "currency": "USD"},
}
TARIFFS = {
    "tou": {"off_peak_price": 0.08, "shoulder_price": 0.15, "peak_price": 0.30, "base_feed_in_tariff": 0.05},
    "flat": {"off_peak_price": 0.15, "shoulder_price": 0.16, "peak_price": 0.18, "base_feed_in_tariff": 0.07},
}
HVAC_CLASSES = np.array([0.0, 0.6, 1.0, 1.5])
HVAC_WEIGHTS = np.array([0.10, 0.30, 0.45, 0.15])
BATTERY_KWH = np.array([5.0, 10.0, 13.5, 20.0])
BATTERY_WEIGHTS = np.array([0.20, 0.35, 0.30, 0.15])
BATTERY_C_RATE = 0.37
BASE_LOAD_KW, PEAK_LOAD_KW, HVAC_KW = 0.5, 8.0, 3.5
CSV_FIELDS = ("site_id", "latitude", "longitude", "load_scale", "hvac_kw", "pv_kw", "azimuth_deg", "tilt_deg",
              "battery_kwh", "battery_kw", "has_ev", "tariff", "seed")


@dataclass(frozen=True)
class SiteSpec:
    """One prosumer, in the fleet's own terms (the CSV row)."""

    site_id: str
    latitude: float
    longitude: float
    load_scale: float
    hvac_kw: float
    pv_kw: float
    azimuth_deg: float
    tilt_deg: float
    battery_kwh: float
    battery_kw: float
    has_ev: bool
    tariff: str
    seed: int

    @property
    def archetype(self) -> str:
        return "-".join((("pv" if self.pv_kw > 0 else "nopv"), ("bat" if self.battery_kwh > 0 else "nobat"),
                         ("ev" if self.has_ev else "noev"), self.tariff))


@dataclass(frozen=True)
class Fleet:
    sites: tuple[SiteSpec, ...]
    region: str = "bay-area"
    group_size: int = 100

    def __len__(self) -> int:
        return len(self.sites)

    def groups(self) -> list[range]:
        """Coordination groups: consecutive sites, the central aggregator's planning unit."""
        n = len(self.sites)
        return [range(start, min(start + self.group_size, n)) for start in range(0, n, self.group_size)]

    def partitions(self, count: int) -> list[range]:
        """At most ``count`` contiguous ranges of whole groups, as even as possible."""
        groups = self.groups()
        count = max(1, min(count, len(groups)))
        bounds = np.linspace(0, len(groups), count + 1).round().astype(int)
        return [range(groups[a].start, groups[b - 1].stop) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def draw_sites(n: int, seed: int, region: str = "bay-area", radius_deg: float = 0.4) -> list[SiteSpec]:
    """``n`` sites from the documented distributions; the same seed gives the same fleet."""
    if region not in REGIONS:
        raise ConfigError(f"region {region!r}: expected one of {', '.join(REGIONS)}")
    rng = np.random.default_rng([seed, 0xF1EE7])
    centre = REGIONS[region]
    radius = radius_deg * np.sqrt(rng.uniform(size=n))
    angle = rng.uniform(0, 2 * np.pi, n)
    load_scale = np.clip(rng.lognormal(0.0, 0.25, n), 0.5, 2.0)
    hvac_class = rng.choice(HVAC_CLASSES, size=n, p=HVAC_WEIGHTS)
    has_pv = rng.uniform(size=n) < 0.7
    pv_kw = np.where(has_pv, np.clip(load_scale * rng.lognormal(np.log(5.0), 0.3, n), 1.5, 15.0), 0.0)
    azimuth = np.mod(rng.normal(180.0, 30.0, n), 360.0)
    tilt = rng.uniform(10.0, 35.0, n)
    has_battery = rng.uniform(size=n) < np.where(has_pv, 0.6, 0.1)
    battery_kwh = np.where(has_battery, rng.choice(BATTERY_KWH, size=n, p=BATTERY_WEIGHTS), 0.0)
    has_ev = rng.uniform(size=n) < 0.35
    tariff = np.where(rng.uniform(size=n) < 0.7, "tou", "flat")
    seeds = rng.integers(0, 2**31, n)
    return [
        SiteSpec(
            site_id=f"site-{i:05d}", latitude=round(float(centre["latitude"] + radius[i] * np.sin(angle[i])), 5),
            longitude=round(float(centre["longitude"] + radius[i] * np.cos(angle[i])), 5),
            load_scale=round(float(load_scale[i]), 4), hvac_kw=round(float(HVAC_KW * hvac_class[i] * load_scale[i]), 3),
            pv_kw=round(float(pv_kw[i]), 2), azimuth_deg=round(float(azimuth[i]), 1), tilt_deg=round(float(tilt[i]), 1),
            battery_kwh=float(battery_kwh[i]), battery_kw=round(float(battery_kwh[i] * BATTERY_C_RATE), 2),
            has_ev=bool(has_ev[i]), tariff=str(tariff[i]), seed=int(seeds[i]),
        )
        for i in range(n)
    ]


def draw_fleet(n: int, seed: int, region: str = "bay-area", group_size: int = 100) -> Fleet:
    return Fleet(tuple(draw_sites(n, seed, region)), region, group_size)


def simulator_config(site: SiteSpec, region: str, interval_s: int = 3600) -> SimulatorConfig:
    """The simulator's view of a site; the battery runs in ``setpoint`` mode so a strategy
    drives it, and NaN setpoints fall back to the simulator's self-consumption rule."""
    where = REGIONS[region]
    battery_kwh = site.battery_kwh
    data = {
        "device_id": site.site_id, "interval_seconds": interval_s, "seed": site.seed,
        "timezone": where["timezone"], "country": where["country"],
        "solar": {"capacity_kw": site.pv_kw, "latitude": site.latitude, "longitude": site.longitude,
                  "azimuth_degrees": site.azimuth_deg, "tilt_degrees": site.tilt_deg,
                  **({"inverter_kw": 0.9 * site.pv_kw} if site.pv_kw > 0 else {"inverter_kw": 1e-6})},
        "battery": {"capacity_kwh": battery_kwh, "max_charge_rate_kw": site.battery_kw,
                    "max_discharge_rate_kw": site.battery_kw, "mode": "setpoint"},
        "home_load": {"base_load_kw": BASE_LOAD_KW * site.load_scale, "peak_load_kw": PEAK_LOAD_KW * site.load_scale,
                      "hvac_capacity_kw": site.hvac_kw, "has_ev": site.has_ev},
        "grid_price": TARIFFS[site.tariff],
    }
    return build_config(data, source=f"site {site.site_id}")


def write_csv(sites: list[SiteSpec] | tuple[SiteSpec, ...], path: str | Path) -> Path:
    path = Path(path)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for site in sites:
            writer.writerow({name: getattr(site, name) for name in CSV_FIELDS})
    return path


#: The numeric columns and what each must hold, within what the simulator takes of a site.
#: Each test is false for NaN, so a NaN or an infinity is refused here and not in a worker.
NUMBERS = {
    "latitude": (lambda v: -90 <= v <= 90, "a latitude from -90 to 90 degrees"),
    "longitude": (lambda v: -180 <= v <= 180, "a longitude from -180 to 180 degrees"),
    "load_scale": (lambda v: 0 < v <= 1250, "a load scale above 0 and at most 1250 (1: the median house)"),
    "hvac_kw": (lambda v: 0 <= v <= 1000, "an HVAC power from 0 to 1000 kW"),
    "pv_kw": (lambda v: 0 <= v <= 10_000, "a PV size from 0 to 10000 kWp"),
    "azimuth_deg": (lambda v: 0 <= v < 360, "a compass bearing from 0 to below 360 degrees"),
    "tilt_deg": (lambda v: 0 <= v <= 90, "a tilt from 0 to 90 degrees"),
    "battery_kwh": (lambda v: 0 <= v <= 100_000, "a battery capacity from 0 (none) to 100000 kWh"),
    "battery_kw": (lambda v: 0 <= v <= 100_000, "a battery power from 0 to 100000 kW"),
}
#: has_ev as a spreadsheet writes a yes or a no; anything else is refused, not read as no.
BOOLEANS = {"true": True, "yes": True, "y": True, "1": True, "false": False, "no": False, "n": False, "0": False}


def _number(name: str, raw: str) -> float | None:
    """The column's value, or None when it is no number or not one the column holds."""
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if NUMBERS[name][0](value) else None


def _parse_row(row: dict[str, str], line: int, path: Path) -> SiteSpec:
    """One site from its row; a bad value is one line naming the row, the column, the value
    and what the column holds, here rather than in a simulation worker."""
    values: dict = {}
    for name in CSV_FIELDS:
        raw = row.get(name)
        if raw is None or raw == "":
            raise ConfigError(f"{path}:{line}: column {name} is missing or empty")
        if name in NUMBERS:
            values[name] = _number(name, raw)
            expected = NUMBERS[name][1]
        elif name == "has_ev":
            values[name] = BOOLEANS.get(raw.strip().lower())
            expected = "yes or no (also true/false, y/n, 1/0)"
        elif name == "seed":
            values[name] = int(raw) if raw.strip().isdigit() else None
            expected = "a whole number 0 or more"
        else:
            values[name] = raw
            expected = ""
        if values[name] is None:
            raise ConfigError(f"{path}:{line}: {name}={raw!r}: expected {expected}")
    if values["tariff"] not in TARIFFS:
        raise ConfigError(f"{path}:{line}: tariff={values['tariff']!r}; expected one of {', '.join(TARIFFS)}")
    return SiteSpec(**values)


def _sites(rows: Iterable[dict[str, str]], path: Path, region: str) -> list[SiteSpec]:
    """Every row's site, each id once (the results are keyed by it: two rows of one id would
    be joined with each other), and each one a site the simulator takes."""
    sites, lines, bad = [], {}, []
    for line, row in enumerate(rows, start=2):
        try:
            site = _parse_row(row, line, path)
            if site.site_id in lines:
                raise ConfigError(f"{path}:{line}: site_id={site.site_id!r} is already on line {lines[site.site_id]}; "
                                  "expected each site once")
            try:
                simulator_config(site, region)
            except ConfigError as error:
                raise ConfigError(f"{path}:{line}: {error}") from None
        except ConfigError as error:  # every bad row is found in one run, not one per run
            bad.append((line, str(error)))
            continue
        lines[site.site_id] = line
        sites.append(site)
    if len(bad) == 1:
        raise ConfigError(bad[0][1])
    if bad:
        others = ", ".join(str(line) for line, _ in bad[1:21]) + (f" and {len(bad) - 21} more" if len(bad) > 21 else "")
        raise ConfigError(f"{len(bad)} bad rows, the first {bad[0][1]}; the others on lines {others}")
    return sites


def read_csv(path: str | Path, region: str = "bay-area", group_size: int = 100) -> Fleet:
    """A fleet of real sites: one row per site with the columns of ``CSV_FIELDS``."""
    path = Path(path)
    problem = input_problem(path)
    if problem == "not found":
        raise ConfigError(f"{path}: fleet CSV not found")
    if problem is not None:
        raise ConfigError(f"{dd.shown(str(path), 200)}: fleet CSV {problem}; expected a CSV file of "
                          f"{', '.join(CSV_FIELDS)}")
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            sites = _sites(csv.DictReader(handle), path, region)
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not UTF-8 text (byte 0x{error.object[error.start]:02x}); expected a CSV file "
                          "in UTF-8") from None
    except csv.Error as error:
        raise ConfigError(f"{path}: not a CSV file ({error}); expected a CSV file of {', '.join(CSV_FIELDS)}") from None
    if not sites:
        raise ConfigError(f"{path}: fleet CSV has no sites")
    return Fleet(tuple(sites), region, group_size)
