"""The central aggregator's joint dispatch LP: per-site battery blocks coupled by fleet rows.

Columns, per site ``i`` a block of five ``T``-vectors: charge, discharge, import, export (kW)
and stored energy at the end of each step (kWh); then one slack per step for the fleet import
cap and one for the demand-response (DR) target. Rows: each site's energy balance and SOC
recursion (``cloud.optimization.battery_block``, the block of the single-site LP, whose
valuation of the energy left at the horizon's end it shares too: without it a group's plan
and a site's own plan would weigh the same kWh differently), then per step

* import cap:  sum_i w_i (import - export)_i,t  <=  cap_t - sum_i (1 - w_i) fallback_i,t + slack
* DR window:   the same left side  <=  target_t - sum_i (1 - w_i) fallback_i,t + slack
* group peak:  the same left side  <=  peak - sum_i (1 - w_i) fallback_i,t

and, when the problem limits bills, per site ``i`` its own bill of the day at its tariff

* bill limit:  sum_t (import_price_i,t import_i,t - bill_feed_in_i,t export_i,t) dt  <=  bill_limit_i + slack_i

which is at least the bill of the site's net flow wherever import is priced above export
(a site cannot sell above what it buys at), so a plan within the limit costs the site at most
that. Its slack costs ``BILL_PENALTY`` per unit of money.

``peak`` is one more column, priced at ``peak_price_per_kw`` for each kW above
``peak_floor_kw`` (the peak the group has already set this run, which a lower plan today
cannot undo: a demand charge). Without it the cap is free headroom, and a fleet that charges
on cheap hours all at once sets a new fleet peak right up to the cap, above what the sites'
own rule would draw.

``w_i`` is site i's expected participation (1 when every site follows) and ``fallback_i,t``
the net grid flow it has when it does not follow, so the rows hold in expectation. Slacks
cost ``SLACK_PENALTY`` per kWh: an infeasible limit still yields a plan, and its violation is
reported instead of hidden (the soft-constraint approach of EMHASS).

Scale. One joint LP per coordination group (``Fleet.group_size`` sites). A fleet of several
groups shares the fleet limits by allocation: group ``g`` gets its own no-battery net load
plus ``share_g`` of the fleet's headroom (``cap_t - baseline_t``, negative when the cap
binds) and ``share_g`` of the DR reduction, with ``share_g`` the group's share of the fleet's
battery discharge power. The group limits add up to the fleet's, so group plans that meet
theirs meet the fleet's; the price is some lost optimality when flexibility is unevenly
placed (``tests/test_portfolio_central.py`` compares it with the single joint LP).
"""

from __future__ import annotations

from dataclasses import dataclass

import highspy
import numpy as np
import scipy.sparse as sp

from cloud.optimization import battery_block as block
from cloud.optimization.lp import highs_lp, quiet_highs, run_model
from cloud.optimization.plan import stored_energy_value_per_kwh

SLACK_PENALTY = 50.0  # per kWh over a fleet limit; far above any tariff, so slack is a last resort
BILL_PENALTY = 20 * SLACK_PENALTY  # per unit of money over a site's bill limit: DR slack goes first
PEAK_PRICE_PER_KW = 5.0  # per kW of a new group peak per day: above what a kW of charging earns in a day
_INF = highspy.kHighsInf
_C, _D, _IMP, _EXP, _SOC = block.KINDS


@dataclass(frozen=True)
class GroupProblem:
    """One group's day: arrays (sites, T) unless noted."""

    net_kw: np.ndarray
    import_price: np.ndarray
    export_value: np.ndarray
    step_hours: float
    initial_kwh: np.ndarray  # (sites,)
    min_kwh: np.ndarray  # (sites,)
    max_kwh: np.ndarray  # (sites,)
    max_charge_kw: np.ndarray  # (sites, T): rate x cold derating
    max_discharge_kw: np.ndarray  # (sites,)
    charge_efficiency: np.ndarray  # (sites,)
    discharge_efficiency: np.ndarray  # (sites,)
    wear_per_kwh: float = 0.01
    cap_kw: np.ndarray | None = None  # (T,) the group's part of the import cap, NaN = none
    target_kw: np.ndarray | None = None  # (T,) the group's DR limit, NaN outside the window
    weights: np.ndarray | None = None  # (sites,) expected participation
    fallback_kw: np.ndarray | None = None  # (sites, T) net grid flow of a site that does not follow
    peak_price_per_kw: float = 0.0  # 0: no peak term (each site's own cheapest plan)
    peak_floor_kw: float = 0.0  # the group's expected net import peak so far this run
    # (sites,) the energy each battery must end with; None: what it starts with (a day's plan
    # never borrows tomorrow's energy). A demand-response window may spend it to min_kwh.
    end_floor_kwh: np.ndarray | None = None
    # (sites,) the most each site's own bill for the day may come to (imports at import_price,
    # exports at bill_feed_in, the site's tariff); None: no limit.
    bill_limit: np.ndarray | None = None
    bill_feed_in: np.ndarray | None = None  # (sites, T)


@dataclass(frozen=True)
class GroupPlan:
    battery_kw: np.ndarray  # (sites, T), + charging
    grid_kw: np.ndarray  # (sites, T), + importing
    energy_kwh: np.ndarray  # (sites, T)
    cap_slack_kw: np.ndarray  # (T,)
    dr_slack_kw: np.ndarray  # (T,)
    objective: float
    peak_kw: float = 0.0  # the plan's expected group net import peak (at least the floor)
    bill_slack: np.ndarray | None = None  # (sites,) money over each site's bill limit


def _matrix(p: GroupProblem, w: np.ndarray) -> sp.csc_matrix:
    n, steps = p.net_kw.shape
    rows, cols, codes = block.entries(n, steps)
    vals = [block.coefficients(p.charge_efficiency, p.discharge_efficiency, p.step_hours)[codes]]
    rows, cols = [rows], [cols]

    def add(r, c, v):
        rows.append(r), cols.append(c), vals.append(np.broadcast_to(v, r.shape).astype(float))

    s, t = np.divmod(np.arange(n * steps), steps)
    fleet = 2 * n * steps + t
    for offset in (0, steps, 2 * steps):  # cap rows, DR rows, peak rows
        add(fleet + offset, block.column(s, _IMP, t, steps), w[s]), add(fleet + offset, block.column(s, _EXP, t, steps), -w[s])
    slack = 5 * n * steps + np.arange(2 * steps)
    add(2 * n * steps + np.arange(2 * steps), slack, -1.0)
    add(2 * n * steps + 2 * steps + np.arange(steps), np.full(steps, 5 * n * steps + 2 * steps), -1.0)
    limited = _limited(p)
    if limited:  # bill rows: each site's own bill of the day, less a slack
        bill = 2 * n * steps + 3 * steps + s
        add(bill, block.column(s, _IMP, t, steps), (p.import_price * p.step_hours).reshape(-1))
        add(bill, block.column(s, _EXP, t, steps), -(p.bill_feed_in * p.step_hours).reshape(-1))
        add(2 * n * steps + 3 * steps + np.arange(n), 5 * n * steps + 2 * steps + 1 + np.arange(n), -1.0)
    shape = (2 * n * steps + 3 * steps + limited, 5 * n * steps + 2 * steps + 1 + limited)
    return sp.coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=shape).tocsc()


def _limited(p: GroupProblem) -> int:
    """How many bill rows (and slacks) the LP has: one per site when bills are limited."""
    return 0 if p.bill_limit is None else p.net_kw.shape[0]


def _bounds(p: GroupProblem):
    n, steps = p.net_kw.shape
    net = p.net_kw
    dmax = np.broadcast_to(p.max_discharge_kw[:, None], (n, steps))
    soc_low = np.broadcast_to(p.min_kwh[:, None], (n, steps)).copy()
    end_floor = np.minimum(p.initial_kwh, p.max_kwh) if p.end_floor_kwh is None else p.end_floor_kwh
    soc_low[:, -1] = np.maximum(p.min_kwh, end_floor)
    soc_high = p.max_kwh[:, None]
    upper = block.by_kind(p.max_charge_kw, dmax, np.maximum(0.0, net + p.max_charge_kw), np.maximum(0.0, dmax - net), soc_high, (n, steps))
    lower = block.by_kind(0.0, 0.0, 0.0, 0.0, soc_low, (n, steps))
    peaked = p.peak_price_per_kw > 0
    bill_slacks = _limited(p)
    col_lower = np.concatenate([lower, np.zeros(2 * steps), [p.peak_floor_kw if peaked else 0.0], np.zeros(bill_slacks)])
    col_upper = np.concatenate([upper, np.full(2 * steps, _INF), [_INF if peaked else 0.0], np.full(bill_slacks, _INF)])
    return col_lower, col_upper


def _fleet_rhs(p: GroupProblem, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Upper sides of the cap, DR and peak rows."""
    steps = p.net_kw.shape[1]
    rest = np.zeros(steps) if p.fallback_kw is None else ((1.0 - w)[:, None] * p.fallback_kw).sum(axis=0)
    cap = np.full(steps, np.nan) if p.cap_kw is None else p.cap_kw
    target = np.full(steps, np.nan) if p.target_kw is None else p.target_kw
    return np.where(np.isnan(cap), _INF, cap - rest), np.where(np.isnan(target), _INF, target - rest), -rest


def solve_group(p: GroupProblem, highs: highspy.Highs | None = None) -> GroupPlan:
    """The cheapest joint dispatch of a group within its share of the fleet limits; the
    objective is valued like the single-site LP's (the end's stored energy credited, the
    start's charged back)."""
    n, steps = p.net_kw.shape
    w = np.ones(n) if p.weights is None else np.asarray(p.weights, float)
    dt = p.step_hours
    # Energy each battery ends with is credited as a site's own plan credits it, and the start's
    # at the same value goes into the constant: a joint plan is never credited for emptying them.
    stored_value = stored_energy_value_per_kwh(p.import_price, p.discharge_efficiency, p.max_discharge_kw)
    stored = np.zeros((n, steps))
    stored[:, -1] = -stored_value
    wear = p.wear_per_kwh * dt
    cost = block.by_kind(wear, wear, p.import_price * dt, -p.export_value * dt, stored, (n, steps))
    limited = _limited(p)
    cost = np.concatenate([cost, np.full(2 * steps, SLACK_PENALTY * dt), [p.peak_price_per_kw],
                           np.full(limited, BILL_PENALTY)])
    col_lower, col_upper = _bounds(p)
    cap, dr, peak = _fleet_rhs(p, w)
    battery_rows = block.right_hand_side(p.net_kw, p.initial_kwh)
    row_lower = np.concatenate([battery_rows, np.full(3 * steps + limited, -_INF)])
    row_upper = np.concatenate([battery_rows, cap, dr, peak if p.peak_price_per_kw > 0 else np.full(steps, _INF),
                                np.zeros(0) if p.bill_limit is None else p.bill_limit])
    lp = highs_lp(_matrix(p, w), cost, col_lower, col_upper, row_lower, row_upper, float(stored_value @ p.initial_kwh))
    x, objective = run_model(quiet_highs() if highs is None else highs, lp, f"group LP ({n} sites)")
    blocks = block.per_kind(x, n, steps)
    charge, discharge = np.clip(blocks[:, _C], 0.0, None), np.clip(blocks[:, _D], 0.0, None)
    return GroupPlan(
        battery_kw=charge - discharge, grid_kw=blocks[:, _IMP] - blocks[:, _EXP], energy_kwh=blocks[:, _SOC],
        cap_slack_kw=np.maximum(x[5 * n * steps : 5 * n * steps + steps], 0.0),
        dr_slack_kw=np.maximum(x[5 * n * steps + steps : 5 * n * steps + 2 * steps], 0.0),
        objective=objective, peak_kw=float(x[5 * n * steps + 2 * steps]) if p.peak_price_per_kw > 0 else 0.0,
        bill_slack=np.maximum(x[5 * n * steps + 2 * steps + 1 :], 0.0) if limited else None,
    )


def new_solver(method: str = "choose") -> highspy.Highs:
    highs = quiet_highs()
    highs.setOptionValue("solver", method)
    return highs
