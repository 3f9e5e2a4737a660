"""`python -m parties.cli` is the `smpc` command."""

import sys

from parties.cli.main import main

sys.exit(main())
