#!/usr/bin/env python3
"""Edge gateway simulator CLI (see README: "Edge gateway")."""

import sys

from edge_gateway.cli import main
from edge_gateway.cli_support import run_cli

if __name__ == "__main__":
    sys.exit(run_cli(main))
