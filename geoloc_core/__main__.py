import sys

from geoloc_core.cli import main

sys.exit(main())
