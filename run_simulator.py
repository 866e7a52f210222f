#!/usr/bin/env python3
"""Edge gateway simulator CLI (docs/operations.md, "Edge gateway simulator")."""

import sys

from der_core.cli_support import run_cli
from edge_gateway.cli import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
