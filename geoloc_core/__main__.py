"""`python -m geoloc_core`: the `geoloc` command line."""

import sys

from geoloc_core.cli import main

sys.exit(main())
