import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import TINY, shared
from geoloc_core.analysis.compare import cross_time_recall
from geoloc_core.base.geo import haversine_km
from geoloc_core.cli import main
from geoloc_core.ingest.orthophotos import capture_date, cut_tiles


@pytest.fixture
def two_years(tmp_path):
    src = tmp_path / "rasters"
    src.mkdir()
    for tif in sorted(shared("naip-nd").glob("*.tif"))[:2]:
        shutil.copy(tif, src / tif.name)
    return src


def test_naip_rasters_cut_into_geotagged_tiles_that_line_up_across_years(two_years, tmp_path):
    manifest = pd.read_csv(cut_tiles(two_years, tmp_path / "tiles", tile_px=224), dtype={"year": str, "date": str})
    assert len(manifest) == 2 * (934 // 224) * (723 // 224)
    assert sorted(manifest["year"].unique()) == ["2009", "2010"] and manifest["date"].iat[0] == "20090818"
    assert manifest["lat"].between(47.0, 47.05).all() and manifest["lon"].between(-99.2, -99.1).all()  # North Dakota
    a, b = (manifest[manifest["year"] == y].set_index("location_id") for y in ("2009", "2010"))
    assert (haversine_km(a["lat"], a["lon"], b.loc[a.index, "lat"], b.loc[a.index, "lon"]) < 0.01).all()  # same ground
    first = manifest.sort_values(["year", "location_id"]).iloc[1]
    assert haversine_km(manifest["lat"].iat[0], manifest["lon"].iat[0], first["lat"],
                        first["lon"]) == pytest.approx(1.12, abs=0.01)
    with Image.open(tmp_path / "tiles" / manifest["path"].iat[0]) as tile:
        assert tile.size == (224, 224) and tile.mode == "RGB"


def test_cross_time_recall_queries_each_year_against_the_others(two_years, tmp_path, tiny_checkpoint, isolated_cache):
    cut_tiles(two_years, tmp_path / "tiles", tile_px=224)
    run = tmp_path / "run"
    assert main(["ingest", str(tmp_path / "tiles"), "--run", str(run)]) == 0
    assert main(["embed", "--run", str(run), "--patches", "--model", TINY.name, "--checkpoint", str(tiny_checkpoint),
                 "--device", "cpu"]) == 0
    rows = cross_time_recall(run, "year", ("cls", "gem", "vlad"), n_words=4)
    assert [r["descriptor"] for r in rows] == ["cls", "gem", "vlad"]
    assert all(0 <= r["R@1"] <= r["R@5"] <= 1 and r["year"] == 2 for r in rows)
    assert rows[0]["radius_km"] == pytest.approx(0.56, abs=0.01)  # half a 224-px tile of 5-m pixels
    with pytest.raises(ValueError, match="no column 'season'"):
        cross_time_recall(run, "season")


def test_rasters_without_a_georeference_are_refused_by_name(tmp_path):
    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(tmp_path / "plain.tif")
    with pytest.raises(ValueError, match="plain.tif: not a GeoTIFF"):
        cut_tiles(tmp_path, tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .tif"):
        cut_tiles(tmp_path / "empty", tmp_path / "out")


def test_capture_date_from_file_names():
    assert capture_date("m_4709963_se_14_1_20190904.tif") == "20190904"
    assert capture_date("orthophoto_north.tif") == "orthophoto_north"
