"""Demand response for an aggregator's fleet: events in (OpenADR or the JSON API), a decision
per event, the fleet dispatched through its gateways, and the delivered reduction measured.

:mod:`cloud.dr.model` is the protocol-neutral vocabulary every part speaks; a protocol
adapter (OpenADR 2.0b today) only translates to and from it.
"""
