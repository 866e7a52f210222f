"""The data generator: one implementation behind every mode (DESIGN.md, "One physics").

:func:`simulate` computes readings for any sites over any instants: exogenous physics
(weather, solar, load, price) vectorised over time per site, then the battery stepped
through time vectorised over sites. ``--historical`` runs it in chunks carrying the battery
state; the live gateway (:mod:`edge_gateway.gateway`) runs it one instant at a time with
the state it persisted. Because exogenous values depend only on (seed, instant) and the
battery step is the same function, both give identical readings for the same instants.

A reading at ``ts`` describes the interval ending at ``ts``: battery power over that
interval, state of charge at ``ts``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from der_core import der_data as dd
from der_core.config import SimulatorConfig
from der_core.tariff import site_tariff
from der_physics import base, battery, grid_price, home_load, solar, weather
from der_physics.tariff import arbitrage_periods

KW_DECIMALS = 4  # published power resolution: 0.1 W
SOC_DECIMALS = 4


@dataclass(frozen=True)
class Exogenous:
    """Everything that does not depend on the battery, arrays of shape (sites, steps)."""

    temp_air_celsius: np.ndarray
    clear_sky_index: np.ndarray
    solar_kw: np.ndarray
    poa_w_m2: np.ndarray
    cell_temp_celsius: np.ndarray
    efficiency_percent: np.ndarray
    hvac_kw: np.ndarray
    appliances_kw: np.ndarray
    lighting_kw: np.ndarray
    ev_kw: np.ndarray
    other_kw: np.ndarray
    price_per_kwh: np.ndarray
    feed_in_tariff: np.ndarray
    demand_charge: np.ndarray
    period_index: np.ndarray
    carbon_g_kwh: np.ndarray
    load_kw: np.ndarray  # the components' sum, formed per site while its rows are in cache

    def steps(self, which: slice) -> Exogenous:
        """The same sites at a run of their steps (views, no copies)."""
        return Exogenous(**{f.name: getattr(self, f.name)[:, which] for f in fields(self)})


def site_exogenous(config: SimulatorConfig, axis: base.TimeAxis, astro: solar.Astronomy, clock) -> dict[str, np.ndarray]:
    seed = config.effective_seed
    epoch_s, doy = axis.epoch_s, axis.day_of_year
    wx = weather.simulate(seed, config.solar.latitude, config.solar.longitude, epoch_s, doy)
    sun = solar.sun_position(axis, config.solar.latitude, config.solar.longitude, astro)
    pv = solar.simulate(config.solar, axis, wx.clear_sky_index, wx.temp_air_celsius, wx.wind_speed_m_s, astro, sun)
    hour, weekday, local_day = clock
    load = home_load.simulate(
        config.home_load, seed, epoch_s, hour, weekday, local_day, wx.temp_air_celsius, sun.zenith_deg, wx.clear_sky_index
    )
    sun_up = np.clip(pv.clear_sky_ghi_w_m2 / 1000.0, 0.0, 1.0)
    price = grid_price.simulate(config.grid_price, seed, config.country, epoch_s, hour, sun_up,
                                base.derived(axis.times, ("interval clock", config.timezone),
                                             lambda: base.interval_clock(axis, config.timezone)))
    return {
        "temp_air_celsius": wx.temp_air_celsius,
        "clear_sky_index": wx.clear_sky_index,
        "solar_kw": pv.generation_kw,
        "poa_w_m2": pv.poa_irradiance_w_m2,
        "cell_temp_celsius": pv.cell_temp_celsius,
        "efficiency_percent": pv.efficiency_percent,
        "hvac_kw": load.hvac_kw,
        "appliances_kw": load.appliances_kw,
        "lighting_kw": load.lighting_kw,
        "ev_kw": load.ev_charging_kw,
        "other_kw": load.other_kw,
        "price_per_kwh": price.price_per_kwh,
        "feed_in_tariff": price.feed_in_tariff,
        "period_index": price.period_index,
        "carbon_g_kwh": price.carbon_intensity_g_kwh,
        "load_kw": load.hvac_kw + load.appliances_kw + load.lighting_kw + load.ev_charging_kw + load.other_kw,
    }


PARALLEL_MIN_SITES = 8  # below this, thread start-up costs more than it saves


def exogenous(configs: Sequence[SimulatorConfig], axis: base.TimeAxis) -> Exogenous:
    """Exogenous physics for every site: a loop over sites, never over time steps.

    Sites are independent and numpy releases the GIL inside its kernels, so fleets spread
    the sites over the cores with Dask's threaded scheduler; each site fills its own rows
    of shared arrays, so the result does not depend on how the work was split.
    """
    astro = solar.Astronomy.of(axis)
    clocks = {tz: base.local_clock(axis, tz) for tz in {c.timezone for c in configs}}
    first = site_exogenous(configs[0], axis, astro, clocks[configs[0].timezone])
    columns = {name: np.empty((len(configs), len(axis)), dtype=v.dtype) for name, v in first.items()}

    def fill(i: int, values: dict[str, np.ndarray] | None = None) -> None:
        values = values or site_exogenous(configs[i], axis, astro, clocks[configs[i].timezone])
        for name, column in values.items():
            columns[name][i] = column

    fill(0, first)
    if len(configs) >= PARALLEL_MIN_SITES:
        import dask

        dask.compute(*(dask.delayed(fill)(i) for i in range(1, len(configs))), scheduler="threads")
    else:
        for i in range(1, len(configs)):
            fill(i)
    # A tariff's demand charge is one number per site, not a physics output: a read-only view
    # repeats it over time rather than a fleet-sized array of copies (100 site-years: 84 MB).
    columns["demand_charge"] = np.broadcast_to(np.array([[c.grid_price.demand_charge] for c in configs]), (len(configs), len(axis)))
    return Exogenous(**columns)


#: Outdoor air temperature a recorded site's battery is run at: a meter records none.
RECORDED_AIR_CELSIUS = 20.0


def recorded_exogenous(config: SimulatorConfig, times, load_kw: np.ndarray, solar_kw: np.ndarray,
                       price_per_kwh: np.ndarray, feed_in_tariff: np.ndarray, carbon_g_kwh: np.ndarray) -> Exogenous:
    """One measured site's exogenous inputs from its recorded series, so the same battery step
    replays a real home: the recorded load (all of it ``other_kw``: a meter measures the
    total, not its parts) and PV, the prices it is billed at, the TOU period of its tariff
    (what the battery's own rules follow: ``der_physics.tariff.arbitrage_periods``) and
    :data:`RECORDED_AIR_CELSIUS`. What a meter does
    not measure (irradiance, cell temperature, the sky) is NaN; no step of the battery reads it."""
    axis = base.TimeAxis.from_times(times)
    period = arbitrage_periods(site_tariff(config), pd.DatetimeIndex(times), config.timezone, config.country)
    row = lambda values: np.asarray(values, dtype=float).reshape(1, len(axis))  # noqa: E731
    unknown, zeros = np.full((1, len(axis)), np.nan), np.zeros((1, len(axis)))
    load = row(load_kw)
    return Exogenous(
        temp_air_celsius=np.full((1, len(axis)), RECORDED_AIR_CELSIUS), clear_sky_index=unknown, solar_kw=row(solar_kw),
        poa_w_m2=unknown, cell_temp_celsius=unknown, efficiency_percent=unknown, hvac_kw=zeros, appliances_kw=zeros,
        lighting_kw=zeros, ev_kw=zeros, other_kw=load, price_per_kwh=row(price_per_kwh), feed_in_tariff=row(feed_in_tariff),
        demand_charge=np.full((1, len(axis)), config.grid_price.demand_charge), period_index=np.asarray(period).reshape(1, -1),
        carbon_g_kwh=row(carbon_g_kwh), load_kw=load,
    )


@dataclass(frozen=True)
class Simulation:
    configs: tuple[SimulatorConfig, ...]
    axis: base.TimeAxis
    exo: Exogenous
    battery: battery.BatteryTrace

    def frame(self) -> pd.DataFrame:
        return to_frame(self)


def initial_state(configs: Sequence[SimulatorConfig]) -> battery.BatteryState:
    return battery.BatteryState.initial([c.battery for c in configs])


def simulate(
    configs: Sequence[SimulatorConfig],
    times,
    state: battery.BatteryState | None = None,
    setpoint_kw: np.ndarray | None = None,
    dt_h: np.ndarray | None = None,
    import_cap_kw: np.ndarray | None = None,
    exo: Exogenous | None = None,
) -> tuple[Simulation, battery.BatteryState]:
    """Simulate ``configs`` at ``times``. ``dt_h`` defaults to each config's interval.

    ``setpoint_kw`` (sites, steps; NaN = no command) drives sites in ``setpoint`` mode, and
    ``import_cap_kw`` (same shape; NaN = none) caps their grid import where the battery can.
    ``exo``: the sites' exogenous physics at ``times`` when already computed (a controller
    stepping a site one reading at a time computes them once for all its steps).
    Returns the simulation and the battery state after the last step.
    """
    configs = tuple(configs)
    axis = base.TimeAxis.from_times(times)
    exo = exogenous(configs, axis) if exo is None else exo
    params = battery.BatteryParams.from_configs([c.battery for c in configs])
    state = initial_state(configs) if state is None else state
    if dt_h is None:
        dt_h = np.full(len(axis), configs[0].interval_seconds / 3600.0)
    request = _requests(configs, exo, params, setpoint_kw, import_cap_kw)
    trace, state = battery.run(params, state, request, dt_h, battery.environment_temperature(exo.temp_air_celsius))
    return Simulation(configs, axis, exo, trace), state


def _requests(configs, exo: Exogenous, params: battery.BatteryParams, setpoint_kw, import_cap_kw) -> np.ndarray:
    """Each site's control-mode request, for fleets on two threads."""
    modes = [c.battery.mode for c in configs]
    rows_of = lambda a, rows: None if a is None else a[rows]  # noqa: E731

    def part(rows: slice) -> np.ndarray:
        return battery.requests(modes[rows], exo.solar_kw[rows], exo.load_kw[rows], exo.period_index[rows],
                                params.max_charge_kw[rows], rows_of(setpoint_kw, rows), rows_of(import_cap_kw, rows))

    request = np.empty(exo.solar_kw.shape)

    def fill(rows: slice) -> None:
        request[rows] = part(rows)

    base.over_site_halves(len(configs), exo.solar_kw.shape[1], fill, PARALLEL_MIN_SITES)
    return request


def _round(values: np.ndarray, digits: int) -> np.ndarray:
    return np.round(values, digits) + 0.0  # + 0.0 turns -0.0 into 0.0


def to_frame(sim: Simulation) -> pd.DataFrame:
    """Flat reading frame, rows ordered by site then time. Components are rounded first and
    totals summed from the rounded parts (then rounded to the same 0.1 W), so the invariants
    hold on the published values to within float representation (1e-9 kW)."""
    exo, trace = sim.exo, sim.battery
    n_sites, n_steps = exo.solar_kw.shape
    kw = lambda a: _round(a, KW_DECIMALS).ravel()  # noqa: E731
    parts = {
        dd.flat_name("home_load", "hvac_kw"): kw(exo.hvac_kw),
        dd.flat_name("home_load", "appliances_kw"): kw(exo.appliances_kw),
        dd.flat_name("home_load", "lighting_kw"): kw(exo.lighting_kw),
        dd.LOAD_EV: kw(exo.ev_kw),
        dd.flat_name("home_load", "other_kw"): kw(exo.other_kw),
    }
    total = _round(sum(parts[c] for c in dd.LOAD_COMPONENTS), KW_DECIMALS)
    solar_kw, battery_kw = kw(exo.solar_kw), kw(trace.power_kw)
    capacity = np.array([c.battery.capacity_kwh for c in sim.configs])
    columns = {
        dd.DEVICE_ID: np.repeat(np.array([c.device_id for c in sim.configs], dtype=object), n_steps),
        dd.TS: np.tile(sim.axis.times.to_numpy(), n_sites),
        dd.SOLAR_KW: solar_kw,
        dd.SOLAR_IRRADIANCE: _round(exo.poa_w_m2, 1).ravel(),
        dd.PANEL_TEMP: _round(exo.cell_temp_celsius, 2).ravel(),
        dd.flat_name("solar", "efficiency_percent"): _round(exo.efficiency_percent, 3).ravel(),
        dd.BATTERY_SOC: _round(trace.soc_percent, SOC_DECIMALS).ravel(),
        dd.BATTERY_CAPACITY: np.repeat(capacity, n_steps),
        dd.BATTERY_POWER: battery_kw,
        dd.BATTERY_VOLTAGE: _round(trace.voltage_v, 3).ravel(),
        dd.BATTERY_TEMP: _round(trace.temperature_celsius, 2).ravel(),
        dd.BATTERY_CYCLES: trace.cycles.ravel(),
        dd.BATTERY_HEALTH: _round(trace.health_percent, 4).ravel(),
        dd.LOAD_TOTAL: total,
        **parts,
        dd.PRICE: _round(exo.price_per_kwh, 5).ravel(),
        dd.FEED_IN: _round(exo.feed_in_tariff, 5).ravel(),
        dd.DEMAND_CHARGE: exo.demand_charge.ravel(),
        dd.TOU_PERIOD: np.asarray(dd.TOU_PERIODS, dtype=object)[exo.period_index.ravel()],
        dd.CARBON: _round(exo.carbon_g_kwh, 1).ravel(),
        dd.NET_GRID_FLOW: _round(total + battery_kw - solar_kw, KW_DECIMALS),
    }
    frame = pd.DataFrame({name: columns[name] for name in dd.COLUMNS})
    frame[dd.TS] = pd.DatetimeIndex(frame[dd.TS]).tz_localize("UTC") if pd.DatetimeIndex(frame[dd.TS]).tz is None else frame[dd.TS]
    return frame


def time_range(start: pd.Timestamp, end: pd.Timestamp, interval_s: int) -> pd.DatetimeIndex:
    """Instants ``start <= t < end`` every ``interval_s`` seconds (UTC)."""
    return pd.date_range(start, end, freq=pd.Timedelta(seconds=interval_s), inclusive="left").tz_convert("UTC")


def step_count(start: pd.Timestamp, end: pd.Timestamp, interval_s: int) -> int:
    """How many instants :func:`time_range` holds, counted without building them."""
    return max(0, -(-(end - start) // pd.Timedelta(seconds=interval_s)))


def historical(
    configs: Sequence[SimulatorConfig],
    start: pd.Timestamp,
    end: pd.Timestamp,
    chunk_steps: int = 8_640,
    state: battery.BatteryState | None = None,
) -> Iterator[pd.DataFrame]:
    """Frames covering ``[start, end)`` chunk by chunk (memory stays bounded for long fleets
    and long spans: a chunk's instants are made when it is simulated); the battery state
    carries over, so chunking never changes a reading."""
    step = pd.Timedelta(seconds=configs[0].interval_seconds)
    for offset in range(0, step_count(start, end, configs[0].interval_seconds), chunk_steps):
        first = start + offset * step
        sim, state = simulate(configs, time_range(first, min(end, first + chunk_steps * step), configs[0].interval_seconds), state)
        yield sim.frame()
