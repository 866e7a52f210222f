"""Day-ahead forecasting of household load, PV output and price (issue 6).

``design`` builds leakage-free multi-horizon rows from resampled readings; ``models`` holds
the forecasters behind one interface; ``training`` splits in time, fits and scores them;
``registry`` keeps trained versions on disk; ``issue`` turns the active version into
forecasts (:func:`cloud.forecasting.issue.forecast_next_day`).
"""
