"""Home battery: the one sequential model, vectorised across sites and stepped through time.

State is stored energy (kWh), lifetime throughput (kWh), cell temperature and age. Each
step clamps the requested AC power (positive charges) to what is physically possible now:
the rate limits, the SOC window and, for charging, a cold-temperature derating (lithium
cells must not be charged fast near freezing). Charge and discharge efficiencies are the
configuration's one-way efficiency each (``BatteryConfig.one_way_efficiency``). Health fades
with equivalent full cycles and calendar age; SOC is relative to the faded capacity. Voltage
comes from an LFP open-circuit-voltage curve plus the I*R drop.

Control modes produce the *request* from exogenous inputs only (so they vectorise over
time); :func:`run` applies the physics. The live gateway, backfills, fleets, the optimizer's
checks and backtests all step through :func:`step`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import NamedTuple

import numba
import numpy as np
from numba.extending import register_jitable

from der_core.config import BatteryConfig, BatteryMode
from der_physics.base import over_site_halves

HOURS_PER_YEAR = 8766.0
THERMAL_TIME_CONSTANT_H = 3.0
THERMAL_MASS_KWH_PER_K = 0.04  # ~150 kg of cells and enclosure
# Open-circuit voltage of one LFP cell against state of charge (fraction).
OCV_SOC = np.array([0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0])
OCV_CELL_V = np.array([2.80, 3.05, 3.20, 3.25, 3.28, 3.29, 3.30, 3.31, 3.32, 3.33, 3.35, 3.40, 3.55])
OCV_SLOPE = np.diff(OCV_CELL_V) / np.diff(OCV_SOC)  # per segment, as np.interp computes it
NOMINAL_CELL_V = 3.2
PARALLEL_MIN_SITES = 16  # below this one thread is quicker than two


@dataclass(frozen=True)
class BatteryParams:
    """Per-site constants, each an array of shape ``(n_sites,)``."""

    capacity_kwh: np.ndarray
    max_charge_kw: np.ndarray
    max_discharge_kw: np.ndarray
    charge_efficiency: np.ndarray
    discharge_efficiency: np.ndarray
    min_fraction: np.ndarray
    max_fraction: np.ndarray
    nominal_voltage_v: np.ndarray
    resistance_ohm: np.ndarray
    fade_per_cycle: np.ndarray  # fraction of capacity per equivalent full cycle
    fade_per_hour: np.ndarray  # calendar fade, fraction per hour
    initial_cycles: np.ndarray

    @classmethod
    def from_configs(cls, configs: Sequence[BatteryConfig]) -> BatteryParams:
        def col(f) -> np.ndarray:
            return np.array([f(c) for c in configs], dtype=float)

        one_way = col(lambda c: c.one_way_efficiency)
        return cls(
            capacity_kwh=col(lambda c: c.capacity_kwh),
            max_charge_kw=col(lambda c: c.max_charge_rate_kw),
            max_discharge_kw=col(lambda c: c.max_discharge_rate_kw),
            charge_efficiency=one_way,
            discharge_efficiency=one_way.copy(),
            min_fraction=col(lambda c: c.min_soc / 100.0),
            max_fraction=col(lambda c: c.max_soc / 100.0),
            nominal_voltage_v=col(lambda c: c.nominal_voltage_v),
            resistance_ohm=col(lambda c: c.internal_resistance_ohm),
            fade_per_cycle=col(lambda c: c.fade_per_cycle_percent / 100.0),
            fade_per_hour=col(lambda c: c.calendar_fade_percent_per_year / 100.0 / HOURS_PER_YEAR),
            initial_cycles=col(lambda c: c.initial_cycles),
        )


@dataclass(frozen=True)
class BatteryState:
    """Per-site state, each an array of shape ``(n_sites,)``."""

    energy_kwh: np.ndarray
    throughput_kwh: np.ndarray
    temperature_celsius: np.ndarray
    age_h: np.ndarray

    @classmethod
    def initial(cls, configs: Sequence[BatteryConfig], temperature_celsius: float | np.ndarray = 20.0) -> BatteryState:
        n = len(configs)
        energy = np.array([c.capacity_kwh * c.initial_soc / 100.0 for c in configs])
        return cls(energy, np.zeros(n), np.broadcast_to(np.asarray(temperature_celsius, float), (n,)).copy(), np.zeros(n))

    def site(self, i: int) -> dict[str, float]:
        return {f.name: float(getattr(self, f.name)[i]) for f in fields(self)}

    @classmethod
    def from_sites(cls, sites: Sequence[dict[str, float]]) -> BatteryState:
        return cls(**{f.name: np.array([s[f.name] for s in sites], dtype=float) for f in fields(cls)})


class _Kernel(NamedTuple):
    """Per-site constants of :func:`_advance`, folded once so the time loop stays lean.
    Arrays over sites for numpy, or floats of one site inside the compiled loop."""

    capacity_kwh: np.ndarray
    fade_offset: np.ndarray  # 1 - fade at zero throughput and age
    fade_per_kwh: np.ndarray
    fade_per_hour: np.ndarray
    min_fraction: np.ndarray
    max_fraction: np.ndarray
    max_charge_kw: np.ndarray
    max_discharge_kw: np.ndarray
    charge_efficiency: np.ndarray
    inv_charge_efficiency: np.ndarray
    discharge_efficiency: np.ndarray
    inv_discharge_efficiency: np.ndarray
    heat_kw_per_kw2: np.ndarray  # I^2 R heating per kW^2 of power


def _kernel(params: BatteryParams) -> _Kernel:
    capacity = np.where(params.capacity_kwh > 0, params.capacity_kwh, np.inf)
    return _Kernel(
        capacity_kwh=params.capacity_kwh,
        fade_offset=1.0 - params.fade_per_cycle * params.initial_cycles,
        fade_per_kwh=params.fade_per_cycle / (2.0 * capacity),
        fade_per_hour=params.fade_per_hour,
        min_fraction=params.min_fraction,
        max_fraction=params.max_fraction,
        max_charge_kw=params.max_charge_kw,
        max_discharge_kw=params.max_discharge_kw,
        charge_efficiency=params.charge_efficiency,
        inv_charge_efficiency=1.0 / params.charge_efficiency,
        discharge_efficiency=params.discharge_efficiency,
        inv_discharge_efficiency=1.0 / params.discharge_efficiency,
        heat_kw_per_kw2=1000.0 * params.resistance_ohm / params.nominal_voltage_v**2,
    )


@register_jitable
def _usable_kwh(k, throughput_kwh, age_h):
    health = k.fade_offset - k.fade_per_kwh * throughput_kwh - k.fade_per_hour * age_h
    return k.capacity_kwh * np.minimum(np.maximum(health, 0.5), 1.0)


def usable_kwh(configs: Sequence[BatteryConfig], state: BatteryState) -> np.ndarray:
    """Each battery's capacity now: its nominal one faded by the cycles and the age of
    ``state``, of which its SOC window is a share (the physics' own rule, :func:`_usable_kwh`)."""
    return _usable_kwh(_kernel(BatteryParams.from_configs(configs)), state.throughput_kwh, state.age_h)


@register_jitable
def _advance(k, energy, throughput, temperature, age, request_kw, dt_h, env_temp):
    """One step of the physics: the single implementation of the battery.

    numpy runs it over arrays of sites (live steps); numba compiles the very same function
    for the batch time loop (:func:`_run_compiled`), where per-step numpy overhead would
    dominate. Both evaluate the same IEEE operations, so they agree bit for bit.
    """
    usable = _usable_kwh(k, throughput, age)
    e_min, e_max = k.min_fraction * usable, k.max_fraction * usable
    derate = np.minimum(np.maximum(temperature * 0.1, 0.0), 1.0)  # no charging at 0 C, full from 10 C
    max_charge = np.minimum(k.max_charge_kw * derate, np.maximum(e_max - energy, 0.0) * (k.inv_charge_efficiency / dt_h))
    max_discharge = np.minimum(k.max_discharge_kw, np.maximum(energy - e_min, 0.0) * (k.discharge_efficiency / dt_h))
    power = np.minimum(np.maximum(request_kw, -max_discharge), max_charge)
    stored = np.maximum(power, 0.0) * k.charge_efficiency + np.minimum(power, 0.0) * k.inv_discharge_efficiency
    throughput = throughput + np.abs(power) * dt_h
    age = age + dt_h
    # Fade during the step shrinks the window; energy above it is capacity lost, not stored.
    usable = _usable_kwh(k, throughput, age)
    energy = np.minimum(np.maximum(energy + stored * dt_h, k.min_fraction * usable), k.max_fraction * usable)
    temperature = temperature + dt_h * (
        (env_temp - temperature) * (1.0 / THERMAL_TIME_CONSTANT_H) + power * power * (k.heat_kw_per_kw2 / THERMAL_MASS_KWH_PER_K)
    )
    return power, energy, throughput, temperature, age


@register_jitable
def _ocv_cell_v(soc_fraction):
    """The OCV curve at one SOC, as ``np.interp`` evaluates it (ends held flat)."""
    if soc_fraction <= OCV_SOC[0]:
        return OCV_CELL_V[0]
    if soc_fraction >= OCV_SOC[-1]:
        return OCV_CELL_V[-1]
    j = 0
    while OCV_SOC[j + 1] <= soc_fraction:
        j += 1
    return OCV_SLOPE[j] * (soc_fraction - OCV_SOC[j]) + OCV_CELL_V[j]


@register_jitable
def _describe(d, power, energy, throughput, usable):
    """Derived readings of one step: SOC (percent), voltage, equivalent full cycles, health.

    ``d`` holds a site's (capacity, cells in series, nominal voltage, resistance, initial
    cycles). Computed inside the time loop so a fleet-year never materialises the
    intermediate arrays a vectorised version needs."""
    capacity = d[0]
    soc_fraction = energy / usable if usable > 0 else 0.0
    voltage = d[1] * _ocv_cell_v(soc_fraction) + (power * 1000.0 / d[2]) * d[3]
    cycles = np.floor(d[4] + throughput * (0.5 / (capacity if capacity > 0 else np.inf)))
    health = usable * (100.0 / (capacity if capacity > 0 else 1.0)) + (0.0 if capacity > 0 else 100.0)
    return 100.0 * soc_fraction, voltage, cycles, health


@numba.njit(cache=True, nogil=True)
def _run_compiled(consts, details, energy, throughput, temperature, age, requests, dt_h, env, out, cycles, final):
    """The time loop for every site. ``consts`` is (sites, 13) in _Kernel order, ``details``
    (sites, 5) as :func:`_describe` reads it; ``out`` is (6, sites, steps): power, SOC,
    energy, temperature, voltage and health; ``cycles`` is (sites, steps); ``final`` (4,
    sites) receives the state after the last step."""
    for i in range(consts.shape[0]):
        c = consts[i]
        k = _Kernel(c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8], c[9], c[10], c[11], c[12])
        e, thr, temp, a = energy[i], throughput[i], temperature[i], age[i]
        for t in range(requests.shape[1]):
            p, e, thr, temp, a = _advance(k, e, thr, temp, a, requests[i, t], dt_h[t], env[i, t])
            soc, volts, cyc, health = _describe(details[i], p, e, thr, _usable_kwh(k, thr, a))
            out[0, i, t], out[1, i, t], out[2, i, t], out[3, i, t], out[4, i, t], out[5, i, t] = p, soc, e, temp, volts, health
            cycles[i, t] = np.int64(cyc)
        final[0, i], final[1, i], final[2, i], final[3, i] = e, thr, temp, a


def step(
    params: BatteryParams, state: BatteryState, request_kw: np.ndarray, dt_h: float, env_temp_celsius: np.ndarray
) -> tuple[np.ndarray, BatteryState]:
    """Apply one step: returns the power actually delivered (kW, + charging) and the new state."""
    power, *new = _advance(
        _kernel(params), state.energy_kwh, state.throughput_kwh, state.temperature_celsius, state.age_h,
        np.asarray(request_kw, dtype=float), float(dt_h), np.asarray(env_temp_celsius, dtype=float),
    )
    return power, BatteryState(*new)


def state_from_reading(
    config: BatteryConfig, soc_percent: float, cycles: float, health_percent: float, temperature_celsius: float
) -> dict[str, float]:
    """One site's state as a reading of it shows it (for a gateway whose saved state is lost).

    Usable capacity, stored energy and temperature come back as read. A reading gives whole
    equivalent cycles, so throughput is taken in the middle of the cycle shown, and age is
    what calendar fade must add to that throughput's fade to give the health shown (0 where
    it would be negative, or where the health sits at a bound of the fade model). What the
    two leave unknown changes the usable capacity by at most half a cycle's fade.
    """
    capacity = config.capacity_kwh
    if capacity <= 0:
        return BatteryState.initial([config], temperature_celsius).site(0)
    k = _kernel(BatteryParams.from_configs([config]))
    health = health_percent / 100.0
    throughput = max(cycles - config.initial_cycles + 0.5, 0.0) * 2.0 * capacity
    age = 0.0
    if 0.5 < health < 1.0 and k.fade_per_hour[0] > 0:
        age = max((k.fade_offset[0] - k.fade_per_kwh[0] * throughput - health) / k.fade_per_hour[0], 0.0)
    energy = soc_percent / 100.0 * capacity * health
    return {"energy_kwh": energy, "throughput_kwh": throughput, "temperature_celsius": float(temperature_celsius), "age_h": age}


@dataclass(frozen=True)
class BatteryTrace:
    """Per-step outputs, arrays of shape ``(n_sites, n_steps)``."""

    power_kw: np.ndarray
    soc_percent: np.ndarray
    energy_kwh: np.ndarray
    temperature_celsius: np.ndarray
    voltage_v: np.ndarray
    cycles: np.ndarray  # equivalent full cycles, whole
    health_percent: np.ndarray


def _per_site(values: Sequence[float | np.ndarray], n_sites: int) -> np.ndarray:
    """``values`` (each a number or one per site) as columns of a (sites, values) table, as the
    compiled loop reads them. Filled column by column: a plan steps the battery one step at a
    time, and building the table was most of such a step's cost."""
    table = np.empty((n_sites, len(values)))
    for k, value in enumerate(values):
        table[:, k] = value
    return table


def run(
    params: BatteryParams,
    state: BatteryState,
    request_kw: np.ndarray,
    dt_h: np.ndarray,
    env_temp_celsius: np.ndarray,
) -> tuple[BatteryTrace, BatteryState]:
    """Step every site through time. ``request_kw`` and ``env_temp_celsius`` are (sites, steps)."""
    n_sites, n_steps = request_kw.shape
    consts = _per_site(_kernel(params), n_sites)
    details = _per_site((params.capacity_kwh, params.nominal_voltage_v / NOMINAL_CELL_V, params.nominal_voltage_v,
                         params.resistance_ohm, params.initial_cycles), n_sites)
    out, cycles, final = np.empty((6, n_sites, n_steps)), np.empty((n_sites, n_steps), dtype=np.int64), np.empty((4, n_sites))
    per_site_args = (
        consts, details, state.energy_kwh.astype(float), state.throughput_kwh.astype(float),
        state.temperature_celsius.astype(float), state.age_h.astype(float), np.ascontiguousarray(request_kw, dtype=float),
    )
    dt_h = np.ascontiguousarray(dt_h, dtype=float)
    env = np.ascontiguousarray(env_temp_celsius, dtype=float)

    def part(rows: slice) -> None:  # each part writes its own rows of the shared outputs
        _run_compiled(*(a[rows] for a in per_site_args), dt_h, env[rows], out[:, rows], cycles[rows], final[:, rows])

    over_site_halves(n_sites, n_steps, part, PARALLEL_MIN_SITES)
    power, soc, energy, temperature, voltage, health = out
    return BatteryTrace(power, soc, energy, temperature, voltage, cycles, health), BatteryState(*final)


# --- control modes: the request each step, from exogenous inputs only -----------------------------


def request_self_consumption(solar_kw: np.ndarray, load_kw: np.ndarray) -> np.ndarray:
    """Store surplus PV, cover the house from the battery otherwise (the step clamps to limits)."""
    return solar_kw - load_kw


def request_tou_arbitrage(solar_kw: np.ndarray, load_kw: np.ndarray, period_index: np.ndarray, max_charge_kw: np.ndarray) -> np.ndarray:
    """Charge from the grid off-peak, keep solar surplus in the shoulder, cover the house at peak."""
    surplus = solar_kw - load_kw
    off_peak, shoulder = 0, 1
    return np.where(period_index == off_peak, max_charge_kw[:, None], np.where(period_index == shoulder, np.maximum(surplus, 0.0), surplus))


def request_setpoint(setpoint_kw: np.ndarray, fallback_kw: np.ndarray, import_cap_kw=None, net_load_kw=None) -> np.ndarray:
    """Follow the external command where one is in force (not NaN); self-consumption otherwise.

    With an import cap (a peak the plan means to hold), the battery discharges more or
    charges less than commanded whenever following the command would import above the cap,
    as hybrid inverters' grid-limit settings do; the step still clamps to what is possible.
    """
    request = np.where(np.isnan(setpoint_kw), fallback_kw, setpoint_kw)
    if import_cap_kw is None:
        return request
    headroom = import_cap_kw - net_load_kw  # battery power that keeps import at the cap
    return np.where(np.isnan(import_cap_kw), request, np.minimum(request, headroom))


def requests(
    modes: Sequence[BatteryMode],
    solar_kw: np.ndarray,
    load_kw: np.ndarray,
    period_index: np.ndarray,
    max_charge_kw: np.ndarray,
    setpoint_kw: np.ndarray | None = None,
    import_cap_kw: np.ndarray | None = None,
) -> np.ndarray:
    """The request of each site's control mode, (sites, steps)."""
    self_consumption = request_self_consumption(solar_kw, load_kw)
    mode_array = np.array([m.value for m in modes])
    tou_rows = mode_array == BatteryMode.TOU_ARBITRAGE.value
    setpoint_rows = mode_array == BatteryMode.SETPOINT.value
    if not tou_rows.any() and not setpoint_rows.any():
        return self_consumption  # a fresh array already: no copy needed
    out = self_consumption.copy()
    if tou_rows.any():
        out[tou_rows] = request_tou_arbitrage(solar_kw[tou_rows], load_kw[tou_rows], period_index[tou_rows], max_charge_kw[tou_rows])
    if setpoint_rows.any() and (setpoint_kw is not None or import_cap_kw is not None):
        commands = np.full(solar_kw.shape, np.nan) if setpoint_kw is None else setpoint_kw
        caps = None if import_cap_kw is None else import_cap_kw[setpoint_rows]
        out[setpoint_rows] = request_setpoint(
            commands[setpoint_rows], self_consumption[setpoint_rows], caps, -self_consumption[setpoint_rows]
        )
    return out


def environment_temperature(temp_air_celsius: np.ndarray) -> np.ndarray:
    """Batteries sit in garages and utility rooms: halfway between outdoors and 20 C."""
    return 0.5 * temp_air_celsius + 10.0
