"""Scenario dispatch: one LP over several load scenarios whose first steps are decided once.

A plan on one forecast spends the battery as if the forecast were sure; when the monthly
demand charge is set by load nobody can time (an EV session), it keeps nothing back
for it. Here every scenario gets its own copy of the dispatch LP's columns and rows
(:func:`lp.lp_arrays`), and three things tie them together:

* the battery's charge and discharge over the first ``shared_steps`` are the same in every
  scenario (they are carried out before the next plan knows more);
* one peak-import column covers every scenario's imports, so the plan pays the demand charge
  of its worst scenario, which is what a month of sessions comes to;
* energy and wear are weighted by each scenario's probability.

Within one price period the LP is indifferent between spending the battery now or later;
under uncertainty later is better (what is kept can still shave a session that runs long), so
energy costs grow by :data:`PATIENCE` over the horizon, a tie-break well below the price steps.

The answer is the cheapest first steps that leave every scenario a way to hold that peak.
Scenario steps after the shared ones are only a means to that end and are never carried out,
so simultaneous flows inside them are not re-solved away as lp.py does; every step is netted to
the one flow that moves the SOC as the pair does (:func:`lp.net_battery_flows`), so each plan
keeps the program's SOC path, and imports no more than the program does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import highspy
import numpy as np
import scipy.sparse as sp

from cloud.optimization.lp import fixed_charges, highs_lp, lp_arrays, net_battery_flows, new_solver, run_model, stored_offset
from cloud.optimization.model import BatterySpec, DispatchError, HorizonInputs, check_feasible
from cloud.optimization.plan import DispatchPlan, build_plan

_FLOW_BLOCKS = 5  # charge, discharge, import, export, SOC: one block of T columns each
#: Relative growth of energy prices from the first step to the last (a tie-break, see above).
PATIENCE = 0.02


@dataclass(frozen=True, eq=False)
class ScenarioPlan:
    """Per scenario a plan costed on its own inputs; the first ``shared_steps`` battery powers
    are the same in all of them, and ``peak_import_kw`` is the import target of all."""

    plans: tuple[DispatchPlan, ...]
    weights: np.ndarray
    peak_import_kw: float
    shared_steps: int
    objective: float

    @property
    def battery_power_kw(self) -> np.ndarray:
        """The decided battery power (positive charges) of the shared steps."""
        return self.plans[0].battery_power_kw[: self.shared_steps]


def _check_scenarios(scenarios: Sequence[HorizonInputs], weights: np.ndarray, shared_steps: int) -> None:
    if not scenarios:
        raise DispatchError("a scenario plan needs at least one scenario")
    first = scenarios[0]
    for inputs in scenarios[1:]:
        if (inputs.steps, inputs.step_hours, inputs.demand_charge_per_kw, inputs.peak_so_far_kw,
                inputs.standing_charge_per_day) != (first.steps, first.step_hours, first.demand_charge_per_kw,
                                                    first.peak_so_far_kw, first.standing_charge_per_day) \
                or not np.array_equal(_window(inputs), _window(first)):
            raise DispatchError("scenarios differ in steps, step length or demand charge; they must share the tariff")
    if len(weights) != len(scenarios) or (weights < 0).any() or not np.isclose(weights.sum(), 1.0):
        raise DispatchError(f"scenario weights must be {len(scenarios)} non-negative numbers summing to 1")
    if not 1 <= shared_steps <= first.steps:
        raise DispatchError(f"shared_steps {shared_steps} must lie between 1 and the horizon's {first.steps} steps")


def _window(inputs: HorizonInputs) -> np.ndarray:
    return np.ones(inputs.steps, dtype=bool) if inputs.demand_window is None else inputs.demand_window


def _non_anticipativity(count: int, steps: int, shared_steps: int) -> sp.csr_matrix:
    """Rows ``x_s[t] - x_0[t] = 0`` for charge and discharge, scenarios s >= 1, t < shared_steps."""
    width = _FLOW_BLOCKS * steps
    rows, cols, values = [], [], []
    row = 0
    for s in range(1, count):
        for block in (0, 1):  # charge, discharge
            for t in range(shared_steps):
                rows += [row, row]
                cols += [s * width + block * steps + t, block * steps + t]
                values += [1.0, -1.0]
                row += 1
    return sp.csr_matrix((values, (rows, cols)), shape=(row, count * width + 1))


def _patient(cost: np.ndarray, steps: int) -> np.ndarray:
    """Import and export prices (blocks 2 and 3) raised by up to :data:`PATIENCE` towards the end."""
    growth = 1.0 + PATIENCE * np.arange(steps) / max(steps - 1, 1)
    cost = cost.copy()
    cost[2 * steps : 4 * steps] *= np.tile(growth, 2)
    return cost


def build_scenario_lp(
    scenarios: Sequence[HorizonInputs], battery: BatterySpec, weights: np.ndarray, shared_steps: int,
) -> highspy.HighsLp:
    """The scenario LP of the module docstring, columns scenario by scenario, then the peak."""
    steps, width = scenarios[0].steps, _FLOW_BLOCKS * scenarios[0].steps
    blocks, peaks, costs, lowers, uppers, row_lowers, row_uppers = [], [], [], [], [], [], []
    for inputs, weight in zip(scenarios, weights, strict=True):
        matrix, cost, col_lower, col_upper, row_lower, row_upper = lp_arrays(inputs, battery)
        blocks.append(matrix[:, :width])
        peaks.append(matrix[:, width:])
        costs.append(weight * _patient(cost[:width], steps))
        lowers.append(col_lower[:width])
        uppers.append(col_upper[:width])
        row_lowers.append(row_lower)
        row_uppers.append(row_upper)
    tied = _non_anticipativity(len(scenarios), steps, shared_steps)
    matrix = sp.vstack((sp.hstack((sp.block_diag(blocks), sp.vstack(peaks))), tied), format="csc")
    first = scenarios[0]
    stored = sum(weight * stored_offset(inputs, battery) for inputs, weight in zip(scenarios, weights, strict=True))
    return highs_lp(
        matrix, np.concatenate((*costs, [first.demand_charge_per_kw])),
        np.concatenate((*lowers, [first.peak_so_far_kw])), np.concatenate((*uppers, [highspy.kHighsInf])),
        np.concatenate((*row_lowers, np.zeros(tied.shape[0]))), np.concatenate((*row_uppers, np.zeros(tied.shape[0]))),
        float(stored) + fixed_charges(first),
    )


def solve_scenarios(
    scenarios: Sequence[HorizonInputs], battery: BatterySpec, *, shared_steps: int = 1,
    weights: Sequence[float] | None = None, highs: highspy.Highs | None = None,
) -> ScenarioPlan:
    """The cheapest first ``shared_steps`` that leave every scenario able to hold one peak.

    Equal weights unless given. Raises :class:`InfeasiblePlan` when some scenario admits no
    dispatch, :class:`SolverFailed` if HiGHS stops without an optimum.
    """
    weights = np.full(len(scenarios), 1.0 / max(len(scenarios), 1)) if weights is None else np.asarray(weights, float)
    _check_scenarios(scenarios, weights, shared_steps)
    for inputs in scenarios:
        check_feasible(inputs, battery)
    x, objective = run_model(highs or new_solver(), build_scenario_lp(scenarios, battery, weights, shared_steps),
                             "scenario LP")
    steps, width = scenarios[0].steps, _FLOW_BLOCKS * scenarios[0].steps
    plans = []
    for s, inputs in enumerate(scenarios):
        charge, discharge = net_battery_flows(x[s * width : (s + 1) * width], steps, battery)
        plans.append(build_plan(inputs, battery, charge, discharge, status="scenario"))
    return ScenarioPlan(tuple(plans), weights, float(x[-1]), shared_steps, objective)
