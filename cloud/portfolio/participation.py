"""Whether a site follows an aggregator request.

A request that costs a site ``c`` (money it would lose against its own fallback rule that
day; the fleet's homes defer no load, so no comfort enters it) is followed with probability

    p(c) = p_max / (1 + exp((c - c50) / scale))

so a free request is followed by most sites (p(0) ~ 0.90 with the defaults), half follow at
``c = c50`` and almost none past ``c50 + 4 scale``. Draws come from a generator seeded by
(run seed, site index, day), so a site's choice does not depend on which other sites share
its partition. The aggregator plans with each site's expected participation, estimated from
the cost its previous day's request imposed (the prior ``p(0)`` on the first day); on a day
with a DR window, ``p`` of the budget the plan keeps each site's cost within
(``strategies._dr_plan``), a bound rather than an estimate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ParticipationModel:
    p_max: float = 0.95
    c50: float = 0.30
    scale: float = 0.10

    def probability(self, cost: np.ndarray) -> np.ndarray:
        z = np.clip((np.asarray(cost, float) - self.c50) / self.scale, -50.0, 50.0)
        return self.p_max / (1.0 + np.exp(z))


def follows(model: ParticipationModel, cost: np.ndarray, seed: int, site_index: np.ndarray, day: int) -> np.ndarray:
    """One seeded Bernoulli draw per site for ``day``."""
    p = model.probability(cost)
    u = np.array([np.random.default_rng([seed, 0x9A87, int(i), day]).uniform() for i in site_index])
    return u < p


def deaf_sites(seed: int, site_index: np.ndarray, share: float) -> np.ndarray:
    """Sites cut off from the aggregator: nested as ``share`` grows (a site deaf at 10 % is
    deaf at 25 %), so outcomes against partition size compare like with like."""
    u = np.array([np.random.default_rng([seed, 0xDEAF, int(i)]).uniform() for i in site_index])
    return u < share
