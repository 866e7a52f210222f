"""The reserve policy's dynamic program: expected cost over a horizon, by EV session state.

A stochastic dynamic program over stored energy (a grid of ``e``), the state of the car's
session and the demand charge already paid above the cap, solved backwards over the steps
of a horizon. Per step, in this order:

1. the session moves on: a car that is not charging arrives with the step's hazard (once a
   day where it charges at most once a day); one that charges goes on with the continuation
   probability of its elapsed steps, else stops; each session draws a house-load multiplier
   (``mult`` with ``mult_prob``) for its whole length, as an evening of heating or cooking
   keeps the house high while the car charges;
2. the house load of the step is drawn around its forecast (additive ``resid`` with
   ``resid_prob``, independent from step to step: an oven, a kettle);
3. the battery, seeing the step's load, moves to any energy its rates allow. The grid pays
   the import price or earns the feed-in price, throughput pays wear, and import above the
   cap (``cap_kw`` plus the overshoot already paid) pays the demand charge once per kW, on
   the steps of the tariff's demand window only (``in_window``): outside it no import sets
   the billed peak (``bill.grid_bill``), so none is charged for it and the battery defends no
   cap there.

States: 0 no car yet, ``1 + (k - 1) * M + m`` the ``k``-th charging step of a session at
house multiplier ``m`` (``k = K`` also holds every longer session), ``S - 1`` the day's
session done. The overshoot already paid is interpolated between the levels ``overshoot_kw``,
so the penalty is exact and the levels can be few.

The same recursion values a given pair of threshold tables instead of minimising
(:func:`evaluate`): in step 3 the battery then makes the move the policy makes
(``der_core.control.reserve_request_kw``, the import cap defended as the battery defends
it), and everything else, the step's cost, the overshoot paid and the expectation over what
follows, is the one code the optimisation runs. The program's grid holds only its energy
levels, so the policy's move lands on the better of the two levels either side of the exact
energy (a grid move the battery could make either way); the optimisation minimises over the
same grid moves, so a policy evaluated is never credited with a move the optimum could not
make, and the optimum's value is at most any policy's.

The numbers are small enough for a compiled loop: a day of 15-minute steps, ~100 energy
levels, ~25 battery moves, ~75 session states, 5 overshoot levels and 4 house draws.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from der_core.control import reserve_request_kw

#: Demand charge already paid above the cap, kW: the interpolation levels.
OVERSHOOT_KW = np.array([0.0, 0.5, 1.0, 2.0, 4.0])
#: The policy's own move rule, compiled: the gateway runs the same function in Python.
_policy_request_kw = numba.njit(cache=True, nogil=True)(reserve_request_kw)
_NO_TABLE = np.empty((0, 0))


def backward(*program):
    """Expected cost-to-go ``V`` (steps + 1, states, overshoot levels, energies) of the best
    moves and the expected cost after each step's decision ``W`` (steps, states, overshoot
    levels, energies). ``program``: the arguments of :func:`_recursion` up to ``in_window``."""
    return _recursion(*program, _NO_TABLE, _NO_TABLE, False)


def evaluate(*program, floor_kwh, charge_to_kwh):
    """``V`` and ``W`` as :func:`backward` has them, of the battery following the threshold
    tables ``floor_kwh`` and ``charge_to_kwh`` (steps, states) instead of the best moves."""
    return _recursion(*program, np.ascontiguousarray(floor_kwh, dtype=np.float64),
                      np.ascontiguousarray(charge_to_kwh, dtype=np.float64), True)


@numba.njit(cache=True, nogil=True, parallel=True)
def _recursion(house_kw, pv_kw, price, feed_in, hazard, new_day, cont, charger_kw, one_a_day, e, eta_c, eta_d,
               max_charge_kw, max_discharge_kw, dt, wear, cap_kw, demand_charge, overshoot_kw, terminal_value,
               mult, mult_prob, resid, resid_prob, in_window, floor_kwh, charge_to_kwh, follow):
    """The backward recursion: per step the best move (``follow`` false) or the move of the
    thresholds ``floor_kwh``/``charge_to_kwh`` (``follow`` true)."""
    T = house_kw.shape[0]
    N = e.shape[0]
    K = cont.shape[0]
    M = mult.shape[0]
    S = K * M + 2
    O = overshoot_kw.shape[0]
    done = S - 1
    delta = e[1] - e[0]
    down = int(math.floor(max_discharge_kw * dt / eta_d / delta + 1e-9))
    up = int(math.floor(max_charge_kw * eta_c * dt / delta + 1e-9))
    A = down + up + 1
    power = np.empty(A)
    for a in range(A):
        stored = (a - down) * delta
        power[a] = stored / (eta_c * dt) if stored >= 0 else stored * eta_d / dt
    V = np.empty((T + 1, S, O, N))
    W = np.empty((T, S, O, N))
    for s in range(S):
        for o in range(O):
            for i in range(N):
                V[T, s, o, i] = -terminal_value * (e[i] - e[0])
    for t in range(T - 1, -1, -1):
        arrive = hazard[t + 1] if t + 1 < T else 0.0
        day_turns = new_day[t + 1] if t + 1 < T else False
        for o in range(O):
            for j in range(N):
                arrival = 0.0
                for m in range(M):
                    arrival += mult_prob[m] * V[t + 1, 1 + m, o, j]
                waiting = arrive * arrival + (1.0 - arrive) * V[t + 1, 0, o, j]
                W[t, 0, o, j] = waiting
                after = waiting if (day_turns or not one_a_day) else V[t + 1, done, o, j]
                for k in range(1, K + 1):
                    on = cont[k - 1]
                    for m in range(M):
                        nxt = 1 + (min(k + 1, K) - 1) * M + m
                        W[t, 1 + (k - 1) * M + m, o, j] = on * V[t + 1, nxt, o, j] + (1.0 - on) * after
                W[t, done, o, j] = waiting if day_turns else V[t + 1, done, o, j]
        cap_t = cap_kw if in_window[t] else math.inf  # outside the demand window no import pays or is capped
        for s in numba.prange(S):
            _decide(t, s, S, M, O, N, A, down, house_kw, pv_kw, price, feed_in, charger_kw, mult, resid, resid_prob,
                    power, dt, wear, cap_t, demand_charge, overshoot_kw, V, W, e, eta_c, eta_d, max_charge_kw,
                    floor_kwh, charge_to_kwh, follow)
    return V, W


@numba.njit(cache=True, nogil=True)
def _decide(t, s, S, M, O, N, A, down, house_kw, pv_kw, price, feed_in, charger_kw, mult, resid, resid_prob,
            power, dt, wear, cap_kw, demand_charge, overshoot_kw, V, W, e, eta_c, eta_d, max_charge_kw,
            floor_kwh, charge_to_kwh, follow):
    """``V[t, s]``: the expected cost, over the house draws, of the best move from every
    energy, or of the thresholds' move when ``follow``. ``cap_kw`` is infinite on a step
    outside the demand window: no import there pays the demand charge or is held under a cap."""
    charging = 1 <= s < S - 1
    base = house_kw[t] * (mult[(s - 1) % M] if charging else 1.0) + (charger_kw if charging else 0.0) - pv_kw[t]
    cost = np.empty(A)
    level = np.empty(A, np.int64)
    share = np.empty(A)
    total = np.empty(N)
    best = np.empty(N)
    after_t = W[t, s]
    delta = e[1] - e[0]
    if follow:  # the policy's move before the cap, per house draw and energy: the same at every overshoot level
        wanted = np.empty((resid.shape[0], N))
        for q in range(resid.shape[0]):
            for i in range(N):
                wanted[q, i] = _grid_move(_policy_request_kw(base + resid[q], e[i], floor_kwh[t, s], charge_to_kwh[t, s],
                                                             max_charge_kw, eta_c, eta_d, dt), down, delta, eta_c, eta_d, dt)
    for o in range(O):
        total[:] = 0.0
        for q in range(resid.shape[0]):
            net = base + resid[q]
            for a in range(A):
                grid = net + power[a]
                c = (price[t] * grid if grid > 0 else feed_in[t] * grid) * dt + wear * abs(power[a]) * dt
                over = grid - cap_kw
                level[a], share[a] = o, 0.0
                if over > overshoot_kw[o]:
                    c += demand_charge * (over - overshoot_kw[o])
                    m = o
                    while m + 1 < O and overshoot_kw[m + 1] < over:
                        m += 1
                    level[a] = m
                    if m + 1 < O:
                        share[a] = (over - overshoot_kw[m]) / (overshoot_kw[m + 1] - overshoot_kw[m])
                cost[a] = c
            if follow:
                capped = _grid_move(cap_kw + overshoot_kw[o] - net, down, delta, eta_c, eta_d, dt)
                for i in range(N):
                    low, high = _moves_around(min(wanted[q, i], capped), max(0, down - i), min(A, N - i + down))
                    best[i] = _best(low, high, i, down, cost, level, share, after_t)
            else:
                _best_of_all(N, A, down, cost, level, share, after_t, best)
            for i in range(N):
                total[i] += resid_prob[q] * best[i]
        for i in range(N):
            V[t, s, o, i] = total[i]


@numba.njit(cache=True, nogil=True, inline="always")  # the innermost loop: a call per energy cost a quarter of a solve
def _best(low, high, i, down, cost, level, share, after_t):
    """The least, over moves ``a`` in ``[low, high)`` from energy ``i``, of the step's cost and
    the expected cost after it, at the overshoot the move leaves paid (interpolated between
    levels)."""
    best = 1e300
    for a in range(low, high):
        j = i + a - down
        m = level[a]
        after = after_t[m, j]
        if share[a] > 0.0:
            after = _paid_part(after, after_t[m + 1, j], share[a])
        value = cost[a] + after
        best = min(best, value)
    return best


@numba.njit(cache=True, nogil=True, inline="always")
def _paid_part(after, above, part):
    """The expected cost after a move that leaves the overshoot paid ``part`` of the way from
    one level (cost ``after``) to the next (``above``): interpolated, so few levels suffice."""
    return after + part * (above - after)


@numba.njit(cache=True, nogil=True, inline="always")
def _best_of_all(N, A, down, cost, level, share, after_t, best):
    """:func:`_best` from every energy at once, over every move the grid allows, into ``best``.

    Looped move by move over a contiguous run of energies, not energy by energy over moves,
    so that the inner loop vectorises: the optimisation runs five times faster. The candidates
    and their arithmetic are :func:`_best`'s, so the values are the same to the bit."""
    best[:] = 1e300
    for a in range(A):
        m, c, part, shift = level[a], cost[a], share[a], a - down
        first, last = max(0, -shift), min(N, N - shift)
        into, here = best[first:last], after_t[m, first + shift : last + shift]
        if part > 0.0:
            above = after_t[m + 1, first + shift : last + shift]
            for k in range(last - first):
                into[k] = min(into[k], c + _paid_part(here[k], above[k], part))
        else:
            for k in range(last - first):
                into[k] = min(into[k], c + here[k])


@numba.njit(cache=True, nogil=True, inline="always")
def _grid_move(request, down, delta, eta_c, eta_d, dt):
    """A battery request (kW, positive charges) as a move on the energy grid, in levels and
    fractions of one, counted from the fullest discharge ``down``. Increasing in the request,
    to the bit: the policy's request held under the import cap (``battery.request_setpoint``)
    is the lesser of the two moves, so each is found once, not once per overshoot level."""
    stored = request * eta_c * dt if request >= 0.0 else request * dt / eta_d
    return down + stored / delta


@numba.njit(cache=True, nogil=True, inline="always")
def _moves_around(x, low, high):
    """The moves ``[first, last + 1)`` of the one or two grid levels either side of the move
    ``x``, once clamped to the moves ``[low, high)`` the grid allows."""
    x = min(max(x, low), high - 1.0)
    first = int(math.floor(x + 1e-9))
    last = first + 1 if x - first > 1e-9 else first
    return first, min(last, high - 1) + 1


@numba.njit(cache=True, nogil=True)
def limits(W, price, e, eta_c, eta_d, wear):
    """Per step and session state, at no overshoot: the energy the battery covers load down
    to (``floor``) and the energy it charges up to from the grid (``charge_to``).

    Read off the expected cost after the step's decision: one more step down the energy grid
    saves ``(price - wear) * eta_d * delta`` of import and costs what the lower energy
    costs later; one step up costs ``(price + wear) * delta / eta_c``. The cost after the
    decision is convex in energy, so each is a single threshold."""
    T, S, _, N = W.shape
    delta = e[1] - e[0]
    floor = np.empty((T, S))
    charge_to = np.empty((T, S))
    for t in range(T):
        spend = (price[t] - wear) * eta_d * delta
        buy = (price[t] + wear) * delta / eta_c
        for s in range(S):
            w = W[t, s, 0]
            low = N - 1
            while low > 0 and w[low - 1] - w[low] < spend:
                low -= 1
            high = 0
            while high < N - 1 and w[high] - w[high + 1] > buy:
                high += 1
            floor[t, s] = e[low]
            charge_to[t, s] = e[min(high, low)]
    return floor, charge_to
