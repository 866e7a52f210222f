"""Inputs from outside services: weather forecasts and prices, fetched for the cloud jobs.

Each kind of input has one Protocol and one adapter per service; every adapter fetches
through :mod:`cloud.live.http`, which gives all of them the same timeouts, retries and
errors, and stores what it fetched with the time it was issued or published, so a forecast
made at ``t`` reads only what was available at ``t``.
"""
