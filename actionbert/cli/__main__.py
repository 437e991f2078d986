"""`python -m actionbert.cli` (the same as `python -m actionbert`)."""

import sys

from actionbert.cli import main

sys.exit(main())
