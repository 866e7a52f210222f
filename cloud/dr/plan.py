"""The fleet's plan for an event, and the setpoint schedules that carry it to the gateways.

The plan is the central aggregator's joint LP (:func:`cloud.portfolio.central.solve_group`)
over the sites that can follow, on the event's plan steps: each site's forecast net load, its
battery from its stored energy now down to its floor (``end_floor_kwh``: the window may spend
the charge), import priced at its latest price (plus the adder in the window for a price
signal), export valued at nothing (a reduction is not bought with export the event does not
need). A reduction adds the fleet row ``sum_i w_i grid_i,t <= sum_i w_i baseline_i,t - requested``
with ``w_i`` the expected participation and a non-following site at its baseline.

Each site's schedule for an event (:func:`schedules`): in the window (its own instants,
the plan's 15-minute steps covering it), the planned battery
power with the planned grid import as the import cap, which the battery defends against load
nobody forecast by discharging more, on entries marked as the event's (``"event": true``) so
the gateway holds the cap even below the month's peak import
(:meth:`der_core.control.Controller.cap_kw`); at the window's end one entry with no command,
after which the battery runs its own rule again. What a site is sent is
:func:`site_schedule`: every window it takes part in, and no command before or between them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from cloud.dr import baseline as b
from cloud.dr.capability import FleetState
from cloud.portfolio.central import GroupProblem, solve_group
from der_core.setpoints import SetpointEntry, SetpointSchedule


@dataclass(frozen=True)
class FleetPlan:
    devices: list[str]
    steps: pd.DatetimeIndex
    battery_kw: np.ndarray  # (sites, steps), + charging
    grid_kw: np.ndarray  # (sites, steps), + importing
    baseline_kw: np.ndarray  # (sites, steps)
    weights: np.ndarray  # (sites,)
    step: pd.Timedelta
    window: tuple[pd.Timestamp, pd.Timestamp]  # the event's [start, end), which ``steps`` cover

    @property
    def site_reduction_kw(self) -> np.ndarray:
        """Per site, the planned reduction below its baseline, averaged over the window alone
        (:func:`cloud.dr.baseline.window_mean`): delivery is measured over it, not over the steps."""
        return b.window_mean(self.baseline_kw - self.grid_kw, self.steps, self.step, *self.window)

    @property
    def fleet_reduction_kw(self) -> float:
        """The expected fleet reduction (participation-weighted), averaged over the window."""
        return float(self.weights @ self.site_reduction_kw)


def solve(state: FleetState, steps: pd.DatetimeIndex, step: pd.Timedelta, window: tuple[pd.Timestamp, pd.Timestamp], *,
          requested_kw: float | None, price_adder_per_kwh: float = 0.0, weights: np.ndarray | None = None, wear_per_kwh: float = 0.01) -> FleetPlan:
    """The joint plan of ``state``'s sites (all of which can follow) on the plan ``steps``
    covering the event's ``window`` (or its rest, under way).

    The LP runs one step past the window, at the window's last forecast and the price without
    the adder: the LP values the energy left at its horizon's end at the horizon's cheapest
    import, and over the window alone a price adder would raise that value as much as the
    saving, so a price signal would plan nothing. That step's plan is not sent."""
    n, horizon = state.baseline_kw.shape
    w = np.ones(n) if weights is None else np.asarray(weights, float)
    after = lambda a: np.concatenate([a, a[:, -1:]], axis=1)  # noqa: E731
    price = np.broadcast_to(state.price_per_kwh[:, None], (n, horizon + 1)).copy()
    price[:, :horizon] += price_adder_per_kwh
    target = None if requested_kw is None else np.append((w @ state.baseline_kw) - requested_kw, np.nan)
    problem = GroupProblem(
        net_kw=after(state.net_kw), import_price=price, export_value=np.zeros((n, horizon + 1)),
        step_hours=step / pd.Timedelta(hours=1), initial_kwh=state.energy_kwh, min_kwh=state.min_kwh, max_kwh=state.max_kwh,
        max_charge_kw=np.broadcast_to(state.max_charge_kw[:, None], (n, horizon + 1)).copy(),
        max_discharge_kw=state.max_discharge_kw, charge_efficiency=state.efficiency, discharge_efficiency=state.efficiency,
        wear_per_kwh=wear_per_kwh, target_kw=target, weights=w, fallback_kw=after(state.baseline_kw),
        end_floor_kwh=state.min_kwh,
    )
    plan = solve_group(problem)
    return FleetPlan(state.devices, steps, plan.battery_kw[:, :horizon], plan.grid_kw[:, :horizon], state.baseline_kw, w,
                     step, window)


def schedules(plan: FleetPlan, start: pd.Timestamp, end: pd.Timestamp) -> Mapping[str, SetpointSchedule]:
    """Per site, the event's window ``[start, end)``: the plan in it, then no command from its end.

    The plan's steps cover the window; a window off the step is cut to its own instants (the
    first step's command from ``start``, no command from ``end``): the source asks for and
    measures that window alone, and the next event on the site may start at ``end``."""
    starts = [max(plan.steps[0], start), *plan.steps[1:], end]
    caps = np.maximum(plan.grid_kw, 0.0)
    event = np.append(np.ones(len(plan.steps), bool), False)
    return {device: SetpointSchedule.from_commands(starts, np.append(plan.battery_kw[i], np.nan),
                                                   np.append(caps[i], np.nan), event=event)
            for i, device in enumerate(plan.devices)}


def continued(earlier: Mapping[str, SetpointSchedule], rest: Mapping[str, SetpointSchedule], resume: pd.Timestamp,
              end: pd.Timestamp) -> dict[str, SetpointSchedule]:
    """Per site, the window of an event re-planned while under way: the earlier window's entries
    before ``resume`` (the first step a new schedule can reach), then the re-plan of the rest
    (``rest``, from ``resume``), or no command from ``resume`` (or the new ``end``, if sooner)
    for a site the re-plan leaves out. A site holds the earlier window until a new schedule can
    reach it whatever is sent, so sending it is what keeps the reduction from lapsing meanwhile."""
    stop = min(resume, end)
    out = {}
    for device in sorted({*earlier, *rest}):
        held = [e for e in earlier[device].entries if e.ts < stop] if device in earlier else []
        tail = list(rest[device].entries) if device in rest else [SetpointEntry(stop, None, None)] if held else []
        if tail:
            out[device] = SetpointSchedule(tuple(held + tail))
    return out


def site_schedule(windows: Iterable[SetpointSchedule], now: pd.Timestamp) -> SetpointSchedule | None:
    """The one schedule a site is sent: each window of :func:`schedules` it takes part in that
    has not ended, in time order, with no command before, between and after them; None when
    none is left.

    A retained schedule is replaced whole by the next one on its topic, so a site's message
    must carry every event it answers, or a later event silently drops an earlier one. Until a
    window the battery runs its own rule: holding it from the decision on would forgo days of
    self-consumption for an event announced days ahead. A site takes no two events at once
    (:func:`cloud.dr.capability.commitments`), so the windows never overlap."""
    standing = sorted((w for w in windows if w.entries[-1].ts > now), key=lambda w: w.entries[0].ts)
    if not standing:
        return None
    start = now.floor("s")
    entries = [] if standing[0].entries[0].ts <= start else [SetpointEntry(start, None, None)]
    for window in standing:
        if entries and entries[-1].ts == window.entries[0].ts:  # the window before ends where this one starts
            entries.pop()
        entries.extend(window.entries)
    return SetpointSchedule(tuple(entries))
