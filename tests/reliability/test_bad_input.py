"""Bad input, end to end: every kind yields a specific message naming the file, every good photo goes
on through ingest and embedding, and the report counts both."""

import numpy as np
import pandas as pd
import pytest

from conftest import TINY
from corpus import exif_corpus, manifest_corpus
from geoloc_core.base.images import decode_image
from geoloc_core.cli import main
from geoloc_core.ingest.photos import load_photos

pytestmark = pytest.mark.slow  # minutes: real processes, kill loops, many sessions


def _check(root, expected, table, report):
    reasons = {}
    for r in report.rejected + report.to_locate:  # a photo without usable GPS is to locate, with the reason
        reasons.setdefault(r.path, r.reason)
    accepted = set(table.frame["path"])
    for name, want in expected.items():
        if want is None:
            assert name in accepted, f"{name} should be accepted, got {reasons.get(name)!r}"
        else:
            assert name in reasons and want in reasons[name], f"{name}: want {want!r}, got {reasons.get(name)!r}"
    assert report.n_accepted == sum(v is None for v in expected.values()) == len(table)


def test_exif_folder_corpus(tmp_path):
    expected = exif_corpus(tmp_path / "photos")
    table, report = load_photos(tmp_path / "photos")
    _check(tmp_path / "photos", expected, table, report)
    assert len(expected) >= 20
    row = table.frame.set_index("path").loc["south_west.jpg"]
    assert row["lat_deg"] < -33 and row["lon_deg"] < -70  # S and W refs honoured
    heic = table.frame.set_index("path").loc["iphone.heic"]
    assert abs(heic["lat_deg"] - 43.51) < 1e-4 and abs(heic["lon_deg"] - 16.44) < 1e-4  # GPS read from the HEIC's EXIF
    # turned upright (orientation 6)
    assert decode_image((tmp_path / "photos" / "iphone.heic").read_bytes()).size == (40, 56)


def test_manifest_corpus(tmp_path):
    expected = manifest_corpus(tmp_path / "photos")
    table, report = load_photos(tmp_path / "photos")
    _check(tmp_path / "photos", expected, table, report)
    assert "duplicate row" in next(r.reason for r in report.rejected if r.path == "rgb.png")


def test_the_whole_pipeline_carries_the_good_photos_past_the_bad_ones(tmp_path, tiny_checkpoint, isolated_cache):
    expected = exif_corpus(tmp_path / "photos")
    run = tmp_path / "run"
    assert main(["ingest", str(tmp_path / "photos"), "--run", str(run)]) == 0
    assert main(["embed", "--run", str(run), "--model", TINY.name, "--checkpoint", str(tiny_checkpoint), "--device",
                 "cpu"]) == 0
    photos = pd.read_csv(run / "photos.csv", keep_default_na=False)
    rejected = pd.read_csv(run / "rejected.csv", keep_default_na=False)
    to_locate = pd.read_csv(run / "to_locate.csv", keep_default_na=False)
    assert len(photos) == sum(v is None for v in expected.values()) == len(np.load(run / "embeddings.npy"))
    assert len(rejected) + len(to_locate) == sum(v is not None for v in expected.values())
    assert set(to_locate["path"]) == {"zero_denominator.jpg", "missing_ref.jpg", "bad_ref.jpg", "no_gps.jpg"}
    assert "caf\\xe9_latin1.jpg" in set(rejected["path"])  # named readably in the report
    assert np.allclose(np.linalg.norm(np.load(run / "embeddings.npy"), axis=1), 1, atol=1e-5)
