"""geoloc: image geolocation over proximity-graph regions."""

import os

# No hub downloads at run time, ever: weights come from files the user or the install step provides.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
