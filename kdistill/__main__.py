"""`python -m kdistill ...`: the `kdistill` command line."""

import sys

from kdistill.cli import main

sys.exit(main())
