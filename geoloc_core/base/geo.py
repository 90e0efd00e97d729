"""Geodesy helpers: great-circle distances, unit-sphere vectors and a local metric plane."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pyproj import Transformer

EARTH_RADIUS_KM = 6371.0088  # IUGG mean radius, as GeoCLIP / OSV5M evaluations use


def haversine_km(lat1_deg, lon1_deg, lat2_deg, lon2_deg) -> np.ndarray:
    """Great-circle distance in km between broadcastable arrays of coordinates in degrees."""
    lat1, lon1, lat2, lon2 = (np.radians(np.asarray(a, dtype=np.float64))
                              for a in (lat1_deg, lon1_deg, lat2_deg, lon2_deg))
    a = np.sin((lat2 - lat1) / 2) ** 2 + np.cos(lat1) * np.cos(lat2) * np.sin((lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.clip(a, 0.0, 1.0)))


def latlon_to_xyz(lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
    """(N,) degrees -> (N, 3) unit vectors, for averaging positions without a dateline seam."""
    lat, lon = np.radians(lat_deg), np.radians(lon_deg)
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)


def xyz_to_latlon(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, 3) vectors of any length -> (lat_deg, lon_deg)."""
    x, y, z = np.moveaxis(np.asarray(xyz, dtype=np.float64), -1, 0)
    return np.degrees(np.arctan2(z, np.hypot(x, y))), np.degrees(np.arctan2(y, x))


def spherical_mean(lat_deg: np.ndarray, lon_deg: np.ndarray) -> tuple[float, float]:
    """Centroid of points on the sphere (mean of unit vectors), in degrees."""
    lat, lon = xyz_to_latlon(latlon_to_xyz(lat_deg, lon_deg).mean(axis=0))
    return float(lat), float(lon)


@dataclass(frozen=True)
class LocalProjection:
    """Azimuthal equidistant plane centred on a data set: metres, true distances from the centre.

    Proximity graphs are built here rather than on raw degrees, where a degree of longitude is
    shorter than a degree of latitude everywhere but the equator.
    """

    lat0_deg: float
    lon0_deg: float

    @classmethod
    def centred_on(cls, lat_deg: np.ndarray, lon_deg: np.ndarray) -> LocalProjection:
        """The plane centred on the spherical mean of the given points."""
        return cls(*spherical_mean(lat_deg, lon_deg))

    @property
    def crs(self) -> str:
        """The plane as a PROJ string (aeqd, metres) for pyproj and geopandas."""
        return f"+proj=aeqd +lat_0={self.lat0_deg} +lon_0={self.lon0_deg} +datum=WGS84 +units=m +no_defs"

    def _transformer(self, inverse: bool) -> Transformer:
        src, dst = ("EPSG:4326", self.crs) if not inverse else (self.crs, "EPSG:4326")
        return Transformer.from_crs(src, dst, always_xy=True)

    def to_xy_m(self, lat_deg: np.ndarray, lon_deg: np.ndarray) -> np.ndarray:
        """(N,) degrees -> (N, 2) metres (east, north)."""
        x, y = self._transformer(inverse=False).transform(np.asarray(lon_deg), np.asarray(lat_deg))
        return np.column_stack([x, y]).astype(np.float64)

    def to_latlon(self, xy_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, 2) metres -> (lat_deg, lon_deg)."""
        lon, lat = self._transformer(inverse=True).transform(xy_m[:, 0], xy_m[:, 1])
        return np.asarray(lat), np.asarray(lon)
