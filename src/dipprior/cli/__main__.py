import sys

from dipprior.cli import main

sys.exit(main())
