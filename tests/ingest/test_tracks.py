"""Untagged trip photos placed on a GPX track by their EXIF time: a real GPX written with gpxpy, real JPEGs
whose EXIF DateTimeOriginal (and OffsetTimeOriginal, GPS) is written with PIL."""

import io
from datetime import UTC, datetime, timedelta

import gpxpy.gpx
import numpy as np
import pandas as pd
import pytest
from PIL import ExifTags, Image
from PIL.TiffImagePlugin import IFDRational

from conftest import TINY, textured
from geoloc_core.cli import main
from geoloc_core.ingest.photos import load_photos
from geoloc_core.ingest.tracks import Track, open_tagger, parse_utc_offset, position_at

# the track: 10:00:00, 10:01:00, 10:02:00 UTC walking north-east, then nothing until 11:00:00, 11:01:00
POINTS = [("10:00:00", 45.800, 15.900), ("10:01:00", 45.806, 15.912), ("10:02:00", 45.812, 15.924),
          ("11:00:00", 45.900, 16.000), ("11:01:00", 45.910, 16.010)]


def write_gpx(path, points=POINTS, day="2024-06-01"):
    gpx = gpxpy.gpx.GPX()
    track = gpxpy.gpx.GPXTrack()
    segment = gpxpy.gpx.GPXTrackSegment()
    for hms, lat, lon in points:
        segment.points.append(gpxpy.gpx.GPXTrackPoint(lat, lon, time=datetime.fromisoformat(f"{day}T{hms}+00:00")))
    track.segments.append(segment)
    gpx.tracks.append(track)
    path.write_text(gpx.to_xml())
    return path


def photo(seed, taken=None, offset=None, gps=None) -> bytes:
    """A real JPEG; `taken` is EXIF DateTimeOriginal ("2024:06:01 12:00:30"), `offset` OffsetTimeOriginal,
    `gps` (lat, lon) N/E."""
    exif = Image.Exif()
    tags = exif.get_ifd(ExifTags.IFD.Exif)
    if taken:
        tags[0x9003] = taken
    if offset:
        tags[0x9011] = offset
    if gps:
        g = exif.get_ifd(ExifTags.IFD.GPSInfo)
        g[1], g[2], g[3], g[4] = "N", (IFDRational(round(gps[0] * 1e6),
                                                   1_000_000),), "E", (IFDRational(round(gps[1] * 1e6), 1_000_000),)
    buf = io.BytesIO()
    Image.fromarray(textured(seed).astype(np.uint8)).save(buf, "JPEG", exif=exif)
    return buf.getvalue()


@pytest.fixture
def trip(tmp_path):
    """A camera without GPS, its clock on Central European Summer Time (+02:00), and a phone's GPX track."""
    root = tmp_path / "trip"
    root.mkdir()
    shots = {
        "midway.jpg": photo(1, "2024:06:01 12:00:30"),  # 10:00:30 UTC: halfway between the first two points
        "on_point.jpg": photo(2, "2024:06:01 12:02:00"),  # exactly the third point
        "own_offset.jpg": photo(3, "2024:06:01 13:00:45", offset="+03:00"),  # records its own zone: 10:00:45 UTC
        "in_gap.jpg": photo(4, "2024:06:01 12:30:00"),  # 10:30 UTC: 58 minutes between points
        "before.jpg": photo(5, "2024:06:01 11:59:00"),  # 09:59 UTC: before the track starts
        "no_time.jpg": photo(6),
        "phone.jpg": photo(7, "2024:06:01 12:00:30", gps=(43.5, 16.4)),  # has GPS of its own: keeps it
    }
    for name, data in shots.items():
        (root / name).write_bytes(data)
    return root, write_gpx(tmp_path / "phone.gpx")


def test_photos_are_placed_on_the_track_by_their_exif_time(trip):
    root, gpx = trip
    table, report = load_photos(root, tagger=open_tagger(gpx, "+02:00", max_gap_s=300))
    got = table.frame.set_index("path")
    assert sorted(got.index) == ["midway.jpg", "on_point.jpg", "own_offset.jpg", "phone.jpg"]
    assert got.loc["midway.jpg", ["lat_deg", "lon_deg"]].tolist() == pytest.approx([45.803, 15.906], abs=1e-12)
    assert got.loc["on_point.jpg", ["lat_deg", "lon_deg"]].tolist() == [45.812, 15.924]
    assert got.loc["own_offset.jpg", ["lat_deg", "lon_deg"]].tolist() == pytest.approx([45.8045, 15.909], abs=1e-12)
    assert got.loc["phone.jpg", ["lat_deg", "lon_deg"]].tolist() == pytest.approx([43.5, 16.4], abs=1e-9)
    assert got["located_by"].to_dict() == {"midway.jpg": "gpx", "on_point.jpg": "gpx", "own_offset.jpg": "gpx",
                                           "phone.jpg": "exif"}
    assert not report.rejected  # a photo the track cannot place is one to locate, with the reason it was not placed
    reasons = {r.path: r.reason for r in report.to_locate}
    assert reasons["in_gap.jpg"] == ("no GPS in EXIF; taken 2024-06-01 10:30:00 UTC (camera clock 2024-06-01 12:30:00, "
                                     "UTC offset +02:00 as given): in a 3480 s gap of the GPX track (2024-06-01 "
                                     "10:02:00 UTC to 2024-06-01 11:00:00 UTC; the maximum gap is 300 s)")
    assert "09:59:00 UTC" in reasons["before.jpg"] and "outside the GPX track's time span" in reasons["before.jpg"]
    assert reasons["no_time.jpg"] == "no GPS in EXIF; no time taken in EXIF (DateTimeOriginal)"
    assert report.n_from_track == 3
    assert report.summary() == ("4 photos with a location (3 placed on the GPX track) in 4 places, 3 to locate, "
                                "0 rejected of 7")
    assert not report.warnings


def test_a_longer_maximum_gap_bridges_the_gap_and_no_offset_reads_utc_with_a_warning(trip):
    root, gpx = trip
    table, report = load_photos(root, tagger=open_tagger(gpx, "+02:00", max_gap_s=3600))
    in_gap = table.frame.set_index("path").loc["in_gap.jpg"]
    f = 28 / 58  # 10:30 is 28 of the 58 minutes from 10:02 to 11:00
    assert [in_gap["lat_deg"], in_gap["lon_deg"]] == pytest.approx([45.812 + f * 0.088, 15.924 + f * 0.076], abs=1e-12)
    # camera times read as UTC: all after 11:01
    table, report = load_photos(root, tagger=open_tagger(gpx, None, max_gap_s=300))
    # only the photo that records its zone still fits
    assert sorted(table.frame["path"]) == ["own_offset.jpg", "phone.jpg"]
    assert "no time offset given" in report.warnings[0]


def test_manifest_rows_left_empty_are_placed_by_the_track(trip):
    root, gpx = trip
    pd.DataFrame({"path": ["midway.jpg", "no_time.jpg", "before.jpg"], "lat": ["", "", "44.1"],
                  "lon": ["", "", "15.1"]}).to_csv(
        root / "manifest.csv", index=False)
    table, report = load_photos(root, tagger=open_tagger(gpx, "+02:00", max_gap_s=300))
    got = table.frame.set_index("path")
    assert got["located_by"].to_dict() == {"midway.jpg": "gpx", "before.jpg": "manifest"}
    assert got.loc["before.jpg", "lat_deg"] == 44.1  # the manifest's own coordinate wins over the track
    assert [r.reason for r in report.to_locate] == ["row 3: no GPS in EXIF; no time taken in EXIF (DateTimeOriginal)"]
    table, report = load_photos(root)  # without a track, empty cells are missing coordinates, as before
    assert [r.reason
            for r in report.rejected] == [f"row {r}, column 'lat': coordinate missing (empty cell)" for r in (2, 3)]


def test_cli_ingest_and_run_take_the_gpx_settings(trip, tmp_path, capsys, caplog):
    root, gpx = trip
    run = tmp_path / "run"
    assert main(["ingest", str(root), "--run", str(run), "--gpx", str(gpx), "--time-offset", "+02:00", "--gpx-max-gap",
                 "300"]) == 0
    out = capsys.readouterr().out
    assert "4 photos with a location (3 placed on the GPX track) in 4 places, 3 to locate, 0 rejected of 7" in out
    assert "to locate in_gap.jpg: no GPS in EXIF; taken" in out
    photos = pd.read_csv(run / "photos.csv")
    assert sorted(photos.loc[photos["located_by"] == "gpx", "path"]) == ["midway.jpg", "on_point.jpg", "own_offset.jpg"]
    # a negative offset
    assert main(["ingest", str(root), "--run", str(run), "--gpx", str(gpx), "--time-offset=-05:00"]) == 0
    assert main(["ingest", str(root), "--run", str(run), "--gpx", str(gpx), "--time-offset", "CEST"]) == 2
    assert "time offset 'CEST': write the camera clock's UTC offset as +01:00 or -05:00" in caplog.text
    assert main(["ingest", str(root), "--run", str(run), "--gpx", str(tmp_path / "nope.gpx")]) == 2
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["run", "--help"])  # `geoloc run` shares the ingest settings
    help_text = capsys.readouterr().out
    assert all(flag in help_text for flag in ("--gpx GPX", "--time-offset", "--gpx-max-gap"))


@pytest.mark.parametrize("text,hours",
                         [("+01:00", 1), ("-05:00", -5), ("+0530", 5.5), ("+2", 2), ("UTC+2", 2), ("Z", 0),
                          ("-3:30", -3.5)])
def test_utc_offsets(text, hours):
    assert parse_utc_offset(text) == timedelta(hours=hours)


def test_a_folder_of_gpx_files_is_one_track_and_the_antimeridian_is_crossed_the_short_way(tmp_path):
    (tmp_path / "gpx").mkdir()
    write_gpx(tmp_path / "gpx" / "morning.gpx", [("10:00:00", -17.0, 179.9)])
    write_gpx(tmp_path / "gpx" / "AFTERNOON.GPX", [("10:02:00", -17.2, -179.9)])
    track = open_tagger(tmp_path / "gpx", None, 600).track
    assert len(track.time_s) == 2
    t = datetime(2024, 6, 1, 10, 1, tzinfo=UTC).timestamp()
    lat, lon = position_at(track, t, max_gap_s=600)
    assert lat == pytest.approx(-17.1) and abs(lon) == pytest.approx(180.0)  # not 0°, halfway round the world


def test_position_at_the_track_ends_and_a_gpx_without_times(tmp_path):
    track = Track(time_s=np.array([0.0, 10.0]), lat_deg=np.array([1.0, 2.0]), lon_deg=np.array([3.0, 4.0]))
    assert position_at(track, 0.0, 60) == (1.0, 3.0) and position_at(track, 10.0, 60) == (2.0, 4.0)
    assert "outside" in position_at(track, 10.5, 60)
    gpx = gpxpy.gpx.GPX()
    gpx.waypoints.append(gpxpy.gpx.GPXWaypoint(45.0, 16.0))
    (tmp_path / "places.gpx").write_text(gpx.to_xml())
    with pytest.raises(ValueError, match="no points with a time"):
        open_tagger(tmp_path / "places.gpx", None, 60)
    (tmp_path / "broken.gpx").write_text("<gpx><trk>")
    with pytest.raises(ValueError, match="broken.gpx: not a readable GPX file"):
        open_tagger(tmp_path / "broken.gpx", None, 60)


def test_geoloc_run_builds_a_run_from_untagged_photos_and_a_track(tmp_path, tiny_checkpoint, isolated_cache):
    """The whole pipeline over a trip whose camera had no GPS: every photo placed by the track,
    then embedded and cut."""
    root = tmp_path / "trip"
    root.mkdir()
    points = [(f"09:{m:02d}:00", 45.7 + 0.01 * m + 0.004 * (m % 3), 15.9 + 0.012 * m - 0.005 * (m % 4))
              for m in range(30)]
    gpx = write_gpx(tmp_path / "track.gpx", points)
    for i in range(24):  # one every 70 s on a clock set to UTC+1, from 09:00:30 UTC
        taken = datetime(2024, 6, 1, 10, 0, 30) + timedelta(seconds=70 * i)
        (root / f"IMG_{i:04d}.JPG").write_bytes(photo(200 + i, f"{taken:%Y:%m:%d %H:%M:%S}"))
    run = tmp_path / "run"
    assert main(["run", str(root), "--run", str(run), "--gpx", str(gpx), "--time-offset", "+01:00", "--test-frac",
                 "0.25", "--model", TINY.name, "--checkpoint", str(tiny_checkpoint), "--device", "cpu"]) == 0
    placed = pd.read_csv(run / "photos.csv")
    assert len(placed) == 24 and (placed["located_by"] == "gpx").all() and placed["group"].nunique() == 24
    assert placed["lat_deg"].between(45.7, 46.0).all() and len(np.load(run / "embeddings.npy")) == 24
