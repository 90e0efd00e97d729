import math

import numpy as np

from geoloc_core.base.geo import LocalProjection, haversine_km, latlon_to_xyz, spherical_mean, xyz_to_latlon


def test_one_degree_of_longitude_on_the_equator():
    assert abs(haversine_km(0, 0, 0, 1) - 111.19) < 0.01


def test_haversine_vectorised_matches_a_loop():
    rng = np.random.default_rng(0)
    a = rng.uniform([-90, -180], [90, 180], (200, 2))
    b = rng.uniform([-90, -180], [90, 180], (200, 2))
    fast = haversine_km(a[:, 0], a[:, 1], b[:, 0], b[:, 1])
    for (lat1, lon1), (lat2, lon2), got in zip(a, b, fast):
        p1, p2, dl = math.radians(lat1), math.radians(lat2), math.radians(lon2 - lon1)
        central = math.acos(max(-1, min(1, math.sin(p1) * math.sin(p2) + math.cos(p1) * math.cos(p2) * math.cos(dl))))
        assert abs(got - 6371.0088 * central) < 1e-6 * max(1, got)


def test_spherical_mean_across_the_dateline():
    lat, lon = spherical_mean(np.array([10.0, 10.0]), np.array([179.0, -179.0]))
    assert abs(abs(lon) - 180) < 1e-6 and abs(lat - 10.0) < 0.01


def test_xyz_round_trip():
    lat, lon = np.array([45.1, -33.9]), np.array([15.2, 151.2])
    back = xyz_to_latlon(latlon_to_xyz(lat, lon))
    assert np.allclose(back, (lat, lon))


def test_local_projection_keeps_distances_and_round_trips():
    rng = np.random.default_rng(1)
    lat, lon = 45 + rng.uniform(-1, 1, 50), 16 + rng.uniform(-1.5, 1.5, 50)
    proj = LocalProjection.centred_on(lat, lon)
    xy = proj.to_xy_m(lat, lon)
    back_lat, back_lon = proj.to_latlon(xy)
    assert np.allclose(back_lat, lat, atol=1e-9) and np.allclose(back_lon, lon, atol=1e-9)
    planar_km = np.linalg.norm(xy[0] - xy[1:], axis=1) / 1000
    sphere_km = haversine_km(lat[0], lon[0], lat[1:], lon[1:])
    assert np.max(np.abs(planar_km - sphere_km) / sphere_km) < 0.01  # < 1 % over ~300 km
