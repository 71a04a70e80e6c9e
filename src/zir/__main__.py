"""`python -m zir` runs the command line (also what `torchrun -m zir` starts)."""

import sys

from zir.cli import main

sys.exit(main())
