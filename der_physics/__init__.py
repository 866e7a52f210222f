"""The physics of a simulated site: weather, PV, household load, tariff and battery, stepped
together by the generator. The test bench, never the world: no real site reads it."""
