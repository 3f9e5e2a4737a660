"""The `smpc` command line (parties/cli/main.py)."""

import os

# before anything imports grpc: our one-line errors say what gRPC's log lines would
os.environ.setdefault("GRPC_VERBOSITY", "NONE")
