"""Coverage hexagons: every photo counted once in the hexagon that holds it, errors per cell,
GeoJSON that contains them."""

import json

import numpy as np
import pandas as pd
import pytest
import shapely

from geoloc_core.analysis.coverage import (
    coverage_geojson,
    coverage_table,
    hex_cells,
    hex_centres,
    loo_errors,
    run_coverage,
)
from geoloc_core.base import storage
from geoloc_core.cli import main
from geoloc_core.config import CoverageConfig
from geoloc_core.runs.folders import Run
from geoloc_core.runs.provenance import Stale


def test_each_point_falls_in_the_hexagon_with_the_nearest_centre():
    rng = np.random.default_rng(0)
    xy = rng.uniform(-5000, 5000, (2000, 2))
    size = 700.0
    cells = hex_cells(xy, size)
    own = np.linalg.norm(hex_centres(cells, size) - xy, axis=1)
    neighbours = np.array([[1, 0], [-1, 0], [0, 1], [0, -1], [1, -1], [-1, 1]])
    for step in neighbours:
        assert (own <= np.linalg.norm(hex_centres(cells + step, size) - xy, axis=1) + 1e-6).all()
    assert own.max() <= size + 1e-6  # inside the circumscribed circle


def test_counts_sum_to_the_photos_and_errors_summarise_their_cell():
    xy = np.array([[0, 0], [10, 10], [5000, 0], [5010, 5]], float)
    table = coverage_table(xy, xy[:3], np.array([1.0, 3.0, 7.0]), 1000.0)
    assert table["n_photos"].sum() == 4 and table["n_errors"].sum() == 3 and len(table) == 2
    first = table.loc[table["n_photos"] == 2].set_index("q")
    assert sorted(first["median_error_km"]) == [2.0, 7.0]
    err_only = coverage_table(xy[:1], np.array([[90_000.0, 0]]), np.array([5.0]), 1000.0)  # an error where no photo is
    assert err_only["n_photos"].tolist() in ([1, 0], [0, 1]) and err_only["median_error_km"].isna().sum() == 1


def test_leave_location_out_errors_cover_every_photo_without_its_own_location(tiny_run):
    run = Run(tiny_run)
    errors = loo_errors(run)
    table = run.photo_table()
    assert sorted(errors["photo"]) == list(range(len(table)))
    assert (errors["error_km"] > 0).all()  # never located at its own coordinate: its location is left out


def test_the_leave_location_out_answers_are_kept_while_the_embeddings_are_and_a_reader_never_builds_them(tiny_run):
    """The pass over every photo is a command's (a job's): a page reads the kept answers (build=False) and gets none
    that are missing or computed from other embeddings."""
    run = Run(tiny_run)
    with pytest.raises(FileNotFoundError):
        loo_errors(run, build=False)  # the page's read: nothing computed, nothing written
    assert not run.loo_answers.exists()
    first = loo_errors(run)
    assert run.loo_answers.exists() and loo_errors(run, build=False).equals(first)
    with pytest.raises(Stale, match="k=5"):
        loo_errors(run, build=False, k=5)  # kept for k=10: answers for other settings are not these
    emb, _ = run.read_embeddings()
    storage.write_npy(run.embeddings, np.roll(emb, 1, axis=0))  # other embeddings (as a re-embed would give)
    run.record("embeddings")
    with pytest.raises(Stale, match="embeddings"):
        loo_errors(run, build=False)
    again = loo_errors(run)  # the command computes them again
    assert not np.allclose(again["error_km"], first["error_km"])
    assert loo_errors(run, build=False).equals(again)


def test_run_coverage_geojson_holds_every_photo_in_its_hexagon(tiny_run, tmp_path):
    run = Run(tiny_run)
    cells, projection, size_m = run_coverage(run, CoverageConfig(hex_km=20))
    assert size_m == 20_000 and cells["n_photos"].sum() == len(run.photo_table()) == cells["n_errors"].sum()
    geojson = coverage_geojson(cells, projection, size_m)
    polygons = [shapely.geometry.shape(f["geometry"]) for f in geojson["features"]]
    photos = run.photo_table()
    inside = np.array([[p.covers(shapely.Point(lon, lat)) for p in polygons]
                       for lat, lon in zip(photos.lat_deg, photos.lon_deg)])
    counts = pd.Series(inside.argmax(axis=1)).value_counts().reindex(range(len(polygons)), fill_value=0).to_numpy()
    assert inside.any(axis=1).all()
    assert (counts == [f["properties"]["n_photos"] for f in geojson["features"]]).all()

    assert main(["coverage", "--run", str(tiny_run), "--hex-km", "20"]) == 0
    written = json.loads(run.coverage_map.read_text())  # no --out: the run's own
    assert sum(f["properties"]["n_photos"] for f in written["features"]) == len(photos)
    assert written["properties"]["hex_size_km"] == pytest.approx(20)
    with pytest.raises(FileNotFoundError, match="geoloc compare"):
        run_coverage(run, CoverageConfig(errors="compare"))
