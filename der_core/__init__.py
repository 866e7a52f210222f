"""The shared core both sides import: the data contract, configuration, errors, the battery's control law,
CLI support and scheduling."""
