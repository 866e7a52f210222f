"""Supply shortfall: deferrable loads answer ``capacity_low``; what is left is shed.

Deferrable loads, each a share of a simulated load component and a longest wait:

=====================  ======================  =========
load                   share of component      max wait
=====================  ======================  =========
EV charging            100 % of ``ev``         8 h
HVAC pre-cooling       30 % of ``hvac``        2 h
washer / dishwasher    30 % of ``appliances``  6 h
water heater           30 % of ``other``       4 h
=====================  ======================  =========

Each step, a group whose net import exceeds its supply broadcasts ``capacity_low``: sites
that hear it postpone just enough of their deferrable load (the same fraction everywhere) to
close the gap. Postponed energy waits in a queue and is served oldest first when there is
headroom, or unconditionally when its wait runs out. Any remaining excess is unserved: shed
pro rata to each site's import ("starved" sites). Batteries keep their strategy's dispatch,
so only loads move. Energy still queued at the end of the run counts as unserved.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFERRABLE = {  # name: (component, share, max wait in hours)
    "ev": ("ev_kw", 1.0, 8.0),
    "hvac_precool": ("hvac_kw", 0.3, 2.0),
    "washer_dishwasher": ("appliances_kw", 0.3, 6.0),
    "water_heater": ("other_kw", 0.3, 4.0),
}


@dataclass(frozen=True)
class StressOutcome:
    served_load_kw: np.ndarray  # (sites, T) load actually drawn
    deferred_kw: np.ndarray  # (sites, T) load postponed at each step
    unserved_kw: np.ndarray  # (sites, T)


def deferrable_kw(components: dict[str, np.ndarray]) -> list[tuple[np.ndarray, int]]:
    """(kW array, max wait in steps) per deferrable load, given per-step hours in ``components['dt']``."""
    dt = components["dt"]
    return [(share * components[name], max(1, int(round(wait / dt)))) for name, share, wait in DEFERRABLE.values()]


def _serve_queue(queues: list[np.ndarray], headroom: float) -> np.ndarray:
    """Serve queued energy (kW over one step), oldest bucket first, within ``headroom``."""
    served = np.zeros(queues[0].shape[0])
    for age in range(max(q.shape[1] for q in queues) - 1, -1, -1):
        bucket = sum(q[:, age].sum() for q in queues if age < q.shape[1])
        if bucket <= 0 or headroom <= 0:
            continue
        take = min(1.0, headroom / bucket)
        for q in queues:
            if age < q.shape[1]:
                served += take * q[:, age]
                q[:, age] *= 1.0 - take
        headroom -= take * bucket
    return served


def respond(load_kw, battery_kw, pv_kw, supply_kw, loads: list[tuple[np.ndarray, int]], hears: np.ndarray,
            step_hours: float) -> StressOutcome:
    """Deferral and shedding for one group, stepping through time vectorised over its sites."""
    n, steps = load_kw.shape
    served = load_kw.copy()
    deferred, unserved = np.zeros((n, steps)), np.zeros((n, steps))
    queues = [np.zeros((n, wait)) for _, wait in loads]
    for t in range(steps):
        due = sum(q[:, -1] for q in queues)  # waited as long as allowed: served now, whatever the supply
        for q in queues:
            q[:, 1:], q[:, 0] = q[:, :-1].copy(), 0.0
        served[:, t] += due
        net = served[:, t] + battery_kw[:, t] - pv_kw[:, t]
        excess = net.sum() - supply_kw[t] if np.isfinite(supply_kw[t]) else -np.inf
        if excess > 0:
            flexible = [np.where(hears, kw[:, t], 0.0) for kw, _ in loads]
            total = sum(f.sum() for f in flexible)
            fraction = min(1.0, excess / total) if total > 0 else 0.0
            for f, q in zip(flexible, queues):
                q[:, 0] += fraction * f
                deferred[:, t] += fraction * f
            served[:, t] -= deferred[:, t]
            excess -= fraction * total
        else:  # headroom (unbounded when no supply limit is in force): the queue drains
            served[:, t] += _serve_queue(queues, -excess)
        if excess > 1e-9:
            importing = np.maximum(served[:, t] + battery_kw[:, t] - pv_kw[:, t], 0.0)
            shed = np.minimum(excess * importing / max(importing.sum(), 1e-12), served[:, t])
            unserved[:, t], served[:, t] = shed, served[:, t] - shed
    leftover = sum(q.sum(axis=1) for q in queues)
    unserved[:, -1] += leftover
    return StressOutcome(served, deferred, unserved)
