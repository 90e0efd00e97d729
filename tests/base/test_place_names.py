"""Place names: the nearest GeoNames town by great circle, its region, country and distance, named offline."""

import numpy as np
import pytest

from geoloc_core.base.geo import haversine_km
from geoloc_core.base.places import _towns, nearest_towns, place_label, place_labels, region_places


def test_known_towns_are_named_with_region_country_and_distance():
    """Poreč's and Split's centres, and BGU's campus (the bgu-campus data set) in Be'er Sheva."""
    labels, km = place_labels(np.array([45.2272, 43.5081, 31.2620]), np.array([13.5947, 16.4402, 34.8010]))
    assert labels == ["near Porec, Istarska, HR (0.2 km)", "near Split, Splitsko-Dalmatinska, HR (0.1 km)",
                      "near Beersheba, Southern District, IL (1.5 km)"]
    assert km == pytest.approx([0.165, 0.124, 1.461], abs=0.001)


def test_nearest_by_great_circle_against_every_town():
    """The k-d tree on the unit sphere against a brute-force haversine over the whole table, at mid and high latitudes
    and on both sides of the antimeridian (where nearness in degrees goes wrong)."""
    rng = np.random.default_rng(0)
    lat = np.concatenate([rng.uniform(44, 46.5, 60), rng.uniform(60, 71, 60), rng.uniform(-20, -15, 60)])
    lon = np.concatenate([rng.uniform(13, 19, 60), rng.uniform(5, 30, 60), rng.uniform(178, 182, 60)])
    lon = (lon + 180) % 360 - 180
    towns, (table, _) = nearest_towns(lat, lon), _towns()
    for i in range(len(lat)):
        every = haversine_km(lat[i], lon[i], table["lat"].to_numpy(), table["lon"].to_numpy())
        assert towns["dist_km"].iat[i] == pytest.approx(every.min(), abs=1e-9)
        assert towns["name"].iat[i] == table["name"].iat[int(every.argmin())]


def test_nearer_than_reverse_geocoders_own_query_which_measures_in_degrees():
    import reverse_geocoder

    lat, lon = 46.37, 16.746  # on the Mura, where Croatia meets Hungary: a degree of longitude is 0.69 of latitude's
    theirs = reverse_geocoder.RGeocoder(mode=1, verbose=False).query([(lat, lon)])[0]
    ours = nearest_towns(np.array([lat]), np.array([lon]))
    assert (theirs["name"], ours["name"].iat[0]) == ("Letenye", "Gorican")
    their_km = float(haversine_km(lat, lon, float(theirs["lat"]), float(theirs["lon"])))
    assert ours["dist_km"].iat[0] == pytest.approx(5.24, abs=0.01) and their_km == pytest.approx(7.18, abs=0.01)


def test_missing_coordinates_and_the_label_s_parts():
    towns = nearest_towns(np.array([np.nan, 45.2272]), np.array([13.0, 13.5947]))
    assert towns["name"].tolist() == ["", "Porec"] and np.isnan(towns["dist_km"].iat[0])
    assert place_labels(np.array([]), np.array([]))[0] == []
    assert place_label("", "", "", float("nan")) == ""
    assert place_label("Vis", "", "HR", 0.04) == "near Vis, HR (under 0.1 km)"  # no region: left out
    assert place_label("Vis", "Splitsko-Dalmatinska", "HR", 1234.5) == "near Vis, Splitsko-Dalmatinska, HR (1,234 km)"


def test_regions_named_by_their_most_frequent_towns():
    lat, lon = np.array([43.5081, 43.5081, 43.5170, 45.2272]), np.array([16.4402, 16.4402, 16.2510, 13.5947])
    assert region_places(np.array([0, 0, 0, 1]), lat, lon) == {0: "Split (HR) 2, Trogir (HR) 1", 1: "Porec (HR) 1"}
