"""`python -m cli ...`: the `sttm` command."""

import sys

from cli.main import main

sys.exit(main())
