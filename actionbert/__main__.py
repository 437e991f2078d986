"""`python -m actionbert` (also what `torchrun ... -m actionbert` runs)."""

import sys

from actionbert.cli import main

sys.exit(main())
