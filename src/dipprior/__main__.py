"""``python -m dipprior``: the command line (as the ``dipprior`` script)."""

import sys

from dipprior.cli import main

sys.exit(main())
