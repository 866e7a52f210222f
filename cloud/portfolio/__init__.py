"""Portfolio simulations: fleets of prosumers under aggregator strategies, at scale."""
