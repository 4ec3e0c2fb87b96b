"""`python -m capacity ...`: the same as the `avatar-capacity` command."""

import sys

from capacity.cli import main

sys.exit(main())
