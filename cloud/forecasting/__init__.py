"""Day-ahead forecasting of household load, PV output and price.

``design`` builds leakage-free multi-horizon rows from resampled readings; ``models`` holds
the forecasters behind one interface; ``training`` splits in time, fits and scores them;
``registry`` keeps trained versions on disk; ``issue`` turns the active version into
forecasts (:func:`cloud.forecasting.issue.forecast_next_day`).
"""

import os

# OpenMP threads (LightGBM's) that wait for work by spinning hold a core while they wait: on a
# small machine where another process keeps a core busy, two spinning threads made training
# seven times slower than one thread. Sleeping waiters cost nothing measurable on an idle
# machine (benchmarks/bench_training.py --busy-core). libgomp reads the variable once, when
# LightGBM's library loads, so it is set here, before any forecasting module imports
# LightGBM; a value the user set is kept.
WAIT_POLICY_VARIABLE = "OMP_WAIT_POLICY"
os.environ.setdefault(WAIT_POLICY_VARIABLE, "PASSIVE")
