import numpy as np
import pandas as pd
import pytest

from conftest import jpeg_bytes, shared, textured
from geoloc_core.ingest.photos import load_photos
from geoloc_core.runs.folders import Run


def test_exif_samples_read_to_their_manifest_coordinates():
    root = shared("exif-samples")
    expected = pd.read_csv(root / "manifest.csv")
    table, report = load_photos(root / "images")  # a plain folder: GPS from EXIF alone
    assert report.rejected == [] and len(table) == len(expected) == 33
    got = table.frame.assign(path="images/" + table.frame["path"]).merge(expected, on="path")
    assert len(got) == 33
    assert np.abs(got["lat_deg"] - got["lat"]).max() < 1e-5
    assert np.abs(got["lon_deg"] - got["lon"]).max() < 1e-5


def test_croatia_manifest_keeps_location_groups():
    table, report = load_photos(shared("croatia-streetview"))
    assert report.n_accepted == 600 and not report.rejected
    assert table.frame["group"].nunique() == 150
    assert {"heading", "location_id", "sha1"} <= set(table.frame.columns)


def test_exif_folder_groups_by_coordinate(exif_folder):
    table, report = load_photos(exif_folder)
    assert len(table) == 24 and table.frame["group"].nunique() == 12
    assert table.lat_deg.min() > 45.6 and table.lon_deg.max() < 16.2


@pytest.mark.parametrize("header,extra", [
    ("path,lat,lon", ""), ("IMG_FILE,LAT,LON", ""), ("image,latitude,longitude", ""),
    ("IMG_ID,AUTHOR,LAT,LON", "someone"),
])
def test_manifest_header_variants(tmp_path, header, extra):
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes(textured(1)))
    (tmp_path / "b.jpg").write_bytes(jpeg_bytes(textured(2)))
    cols = header.split(",")
    rows = [{cols[0]: "a.jpg", cols[-2]: 45.5, cols[-1]: 16.1}, {cols[0]: "b.jpg", cols[-2]: -33.9, cols[-1]: 151.2}]
    if extra:
        for r in rows:
            r[cols[1]] = extra
    pd.DataFrame(rows, columns=cols).to_csv(tmp_path / "photos.csv", index=False)
    table, report = load_photos(tmp_path / "photos.csv")
    assert len(table) == 2 and not report.rejected
    assert table.lat_deg.tolist() == [45.5, -33.9] and table.lon_deg.tolist() == [16.1, 151.2]


def test_folder_scan_reports_wrong_types_and_missing_gps(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "nogps.jpg").write_bytes(jpeg_bytes(textured(1)))
    (tmp_path / "south_west.jpg").write_bytes(jpeg_bytes(textured(2), gps=(-33.8688, -70.6693)))
    table, report = load_photos(tmp_path)
    assert table.frame["path"].tolist() == ["south_west.jpg"]
    assert abs(table.lat_deg[0] + 33.8688) < 1e-6 and abs(table.lon_deg[0] + 70.6693) < 1e-6
    assert [vars(r) for r in report.rejected] == [{"path": "notes.txt", "reason": "not an image file type (.txt)"}]
    assert [vars(r) for r in report.to_locate] == [{"path": "nogps.jpg", "reason": "no GPS in EXIF"}]  # run locates it


def test_swapped_lat_lon_columns_are_detected(tmp_path):
    for i in range(3):
        (tmp_path / f"{i}.jpg").write_bytes(jpeg_bytes(textured(i)))
    pd.DataFrame({"path": ["0.jpg", "1.jpg", "2.jpg"], "LAT": [139.7, 140.1, 141.0], "LON": [35.6, 36.0, 36.4]}).to_csv(
        tmp_path / "manifest.csv", index=False)
    table, report = load_photos(tmp_path)
    assert len(table) == 3 and table.lat_deg.tolist() == [35.6, 36.0, 36.4]
    assert "look swapped" in report.warnings[0]


def test_empty_folder_and_unusable_manifest_fail_clearly(tmp_path):
    with pytest.raises(ValueError, match="no photos found"):
        load_photos(tmp_path)
    pd.DataFrame({"file": ["a.jpg"], "x": [1]}).to_csv(tmp_path / "manifest.csv", index=False)
    with pytest.raises(ValueError, match="lat/lon columns"):
        load_photos(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_photos(tmp_path / "nope")


def test_photo_table_round_trips_through_a_run_directory(exif_folder, tmp_path):
    table, report = load_photos(exif_folder)
    Run(tmp_path / "run").write_photos(table, report)
    again = Run(tmp_path / "run").photo_table()
    assert again.root == table.root
    pd.testing.assert_frame_equal(again.frame, table.frame, check_dtype=False)
