"""What the decisions are worth: backtests of every strategy on a site's days, and their report.
It drives the decision core (cloud.optimization.decision) as the live planner does; nothing
there imports it."""
