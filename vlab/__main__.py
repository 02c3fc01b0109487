"""`python -m vlab ...` is the `vlab` command."""

import sys

from vlab.commands.cli import main

sys.exit(main())
