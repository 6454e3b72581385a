"""python -m explore: the same as the explore command."""

import sys

from explore.cli import main

sys.exit(main())
