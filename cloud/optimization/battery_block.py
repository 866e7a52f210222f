"""The battery block every dispatch LP is built from: a site's plan (lp.py), the scenario plan
(stochastic.py, through ``lp.lp_arrays``) and the fleet's joint plan (portfolio/central.py).

Columns, per site a block of five ``T``-vectors (site-major, in the order of :data:`KINDS`):
charge, discharge, import, export (kW) and stored energy at the end of each step (kWh). Rows,
each a block of ``sites x T``, site-major:

* energy balance ``import - export - charge + discharge = load - pv``;
* SOC recursion ``soc[t] - soc[t-1] - eta_c*dt*charge[t] + dt/eta_d*discharge[t] = 0``
  (``soc[-1]`` is the initial SOC, moved to the right-hand side): the LP's form of
  :func:`model.stored_kw`.

An LP puts its own columns after the block's and its own rows after the block's rows, and
adds entries in the block's columns for them (a peak, fleet limits).

Entries carry a coefficient code rather than a value, so an LP whose shape depends only on
``T`` builds its pattern once and fills in each site's values by lookup (:func:`coefficients`).
"""

from __future__ import annotations

import numpy as np

CHARGE, DISCHARGE, IMPORT, EXPORT, SOC = KINDS = tuple(range(5))
# Coefficient codes of one site; site ``s``'s code ``c`` is ``s * _CODES + c``.
ONE, MINUS_ONE, CHARGE_GAIN, DISCHARGE_DRAW = range(4)
_CODES = 4


def column(site: np.ndarray | int, kind: int, t: np.ndarray | int, steps: int) -> np.ndarray | int:
    """Column index of (site, kind, step)."""
    return (site * len(KINDS) + kind) * steps + t


def entries(sites: int, steps: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, columns and coefficient codes of the block's entries (balance rows, then SOC rows)."""
    s, t = np.divmod(np.arange(sites * steps), steps)
    balance, soc = s * steps + t, (sites + s) * steps + t
    later = t > 0
    terms = [  # (rows, sites, kind, steps of the column, code)
        (balance, s, IMPORT, t, ONE), (balance, s, EXPORT, t, MINUS_ONE),
        (balance, s, CHARGE, t, MINUS_ONE), (balance, s, DISCHARGE, t, ONE),
        (soc, s, SOC, t, ONE), (soc[later], s[later], SOC, t[later] - 1, MINUS_ONE),
        (soc, s, CHARGE, t, CHARGE_GAIN), (soc, s, DISCHARGE, t, DISCHARGE_DRAW),
    ]
    rows = np.concatenate([r for r, *_ in terms])
    columns = np.concatenate([column(at, kind, when, steps) for _, at, kind, when, _ in terms])
    codes = np.concatenate([at * _CODES + code for _, at, _, _, code in terms])
    return rows, columns, codes


def coefficients(charge_efficiency: np.ndarray | float, discharge_efficiency: np.ndarray | float,
                 step_hours: float) -> np.ndarray:
    """The value of every code, site after site: ``values = coefficients(...)[codes]``."""
    eta_c = np.asarray(charge_efficiency, dtype=float).reshape(-1)
    eta_d = np.asarray(discharge_efficiency, dtype=float).reshape(-1)
    table = np.empty((len(eta_c), _CODES))
    table[:, ONE], table[:, MINUS_ONE] = 1.0, -1.0
    table[:, CHARGE_GAIN] = -eta_c * step_hours
    table[:, DISCHARGE_DRAW] = step_hours / eta_d
    return table.reshape(-1)


def compressed(rows: np.ndarray, columns: np.ndarray, codes: np.ndarray,
               n_columns: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Column starts, row indices and codes of entries in compressed sparse column order, rows
    ascending within a column: the form HiGHS takes and scipy's CSC keeps."""
    order = np.lexsort((rows, columns))
    start = np.zeros(n_columns + 1, dtype=np.int32)
    np.cumsum(np.bincount(columns, minlength=n_columns), out=start[1:])
    return start, rows[order].astype(np.int32), codes[order]


def right_hand_side(net_kw: np.ndarray, initial_kwh: np.ndarray | float) -> np.ndarray:
    """The block's rows are equalities; their right-hand side: each site's load minus PV
    ``(sites, T)`` or ``(T,)``, then its initial energy in its first SOC row."""
    net = np.atleast_2d(net_kw)
    soc = np.zeros(net.shape)
    soc[:, 0] = initial_kwh
    return np.concatenate((net.reshape(-1), soc.reshape(-1)))


def by_kind(charge, discharge, imports, exports, soc, shape: tuple[int, int]) -> np.ndarray:
    """One value per block column, from one array or number per kind broadcast to ``shape``
    ``(sites, T)``: objective coefficients and bounds in the block's column order."""
    values = np.empty((shape[0], len(KINDS), shape[1]))
    for kind, part in zip(KINDS, (charge, discharge, imports, exports, soc), strict=True):
        values[:, kind] = part
    return values.reshape(-1)


def per_kind(x: np.ndarray, sites: int, steps: int) -> np.ndarray:
    """A solution's block columns as ``(sites, kinds, T)``."""
    return x[: sites * len(KINDS) * steps].reshape(sites, len(KINDS), steps)
