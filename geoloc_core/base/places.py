"""Place names for coordinates, offline: GeoNames' cities of 1,000+ people (bundled with
reverse_geocoder), nearest city by k-d tree. Names a region for an analyst: "Split (12), Trogir (5)"."""

from __future__ import annotations

from collections import Counter
from functools import lru_cache

import numpy as np


@lru_cache(maxsize=1)
def _geocoder():
    import reverse_geocoder

    return reverse_geocoder.RGeocoder(mode=1, verbose=False)  # single process: no worker pool in a web app


def nearest_places(lat_deg: np.ndarray, lon_deg: np.ndarray) -> list[str]:
    """The nearest GeoNames city (name, country code) of each coordinate."""
    if not len(lat_deg):
        return []
    found = _geocoder().query(list(zip(np.asarray(lat_deg, float), np.asarray(lon_deg, float))))
    return [f"{f['name']} ({f['cc']})" for f in found]


def region_places(labels: np.ndarray, lat_deg: np.ndarray, lon_deg: np.ndarray, top: int = 3) -> dict[int, str]:
    """Per region, its most frequent nearest places with their photo counts: {region: "Split (HR) 12, ..."}."""
    names = nearest_places(lat_deg, lon_deg)
    out: dict[int, Counter] = {}
    for region, name in zip(np.asarray(labels), names):
        out.setdefault(int(region), Counter())[name] += 1
    return {r: ", ".join(f"{n} {c}" for n, c in counts.most_common(top)) for r, counts in out.items()}
