"""How many sites the central aggregator re-plans per second (a 24 h horizon of 15-minute
steps per re-plan), jointly or group by group, in this process or over Dask workers."""

from __future__ import annotations

import time

import numpy as np

from cloud.portfolio import central

STEPS, STEP_HOURS = 96, 0.25
CYCLE_S = 300.0


def synthetic_group(n: int, seed: int) -> central.GroupProblem:
    """A plausible group: evening-peaking load, PV, TOU price, 0-20 kWh batteries, and a cap
    at 90 % of the group's peak so the coupling rows bind."""
    rng = np.random.default_rng(seed)
    h = np.arange(STEPS) * STEP_HOURS
    load = (0.4 + 1.5 * np.exp(-((h - 19) ** 2) / 6))[None] * rng.uniform(0.5, 1.5, (n, 1))
    pv = np.maximum(0, np.sin((h - 6) / 12 * np.pi))[None] * rng.uniform(0, 6, (n, 1))
    price = np.where((h >= 16) & (h < 21), 0.30, 0.10)[None] * rng.uniform(0.9, 1.1, (n, STEPS))
    cap = rng.choice([0.0, 10.0, 13.5, 20.0], n)
    net = load - pv
    eta = np.full(n, np.sqrt(0.9))
    return central.GroupProblem(net, price, np.full((n, STEPS), 0.05), STEP_HOURS, 0.5 * cap, 0.1 * cap, 0.9 * cap,
                                np.repeat((0.37 * cap)[:, None], STEPS, 1), 0.37 * cap, eta, eta,
                                cap_kw=np.full(STEPS, 0.9 * net.sum(axis=0).max()))


def solve_groups(sizes: list[tuple[int, int]]) -> float:
    """Solve groups (size, seed) in this process; returns the seconds spent solving."""
    problems = [synthetic_group(n, seed) for n, seed in sizes]
    highs = central.new_solver()
    start = time.perf_counter()
    for p in problems:
        central.solve_group(p, highs)
    return time.perf_counter() - start


def group_sizes(n_sites: int, group: int) -> list[tuple[int, int]]:
    return [(min(group, n_sites - s), s) for s in range(0, n_sites, group)]


def replan_rate(n_sites: int, group: int | None = None, mapper=None, chunks: int = 1) -> dict[str, float]:
    """Sites per second for one re-plan of ``n_sites``; ``group`` None plans them jointly."""
    sizes = [(n_sites, 0)] if group is None else group_sizes(n_sites, group)
    start = time.perf_counter()
    if mapper is None:
        solve_groups(sizes)
    else:
        mapper(solve_groups, [sizes[i::chunks] for i in range(chunks)])
    elapsed = time.perf_counter() - start
    return {"sites": n_sites, "group": group or n_sites, "seconds": elapsed, "sites_per_s": n_sites / elapsed,
            "keeps_up": elapsed < CYCLE_S}
