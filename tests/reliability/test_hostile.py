"""Hostile files: nothing a user or an upload hands us is unpickled or executed, and the limits hold.

Each of issue 31's rows has its attack here, made small by the test; where the harm is memory or CPU, the attack
runs in a child process whose growth of max RSS is measured (`resource.getrusage`) and whose CPU time is capped
(`RLIMIT_CPU`, so a regression fails instead of hanging), never timed.
"""

import io
import json
import os
import pickle
import re
import struct
import subprocess
import sys
import time
import tomllib
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import TINY
from corpus import png_bomb
from geoloc_core.base import storage
from geoloc_core.base.images import ImageDecodeError, decode_image
from geoloc_core.config import FinetuneConfig, server_config
from geoloc_core.features.encoders import load_encoder
from geoloc_core.ingest.manifests import read_manifest
from geoloc_core.ingest.photos import load_photos
from geoloc_core.ingest.tracks import read_gpx
from geoloc_core.learn import finetune as ft
from geoloc_core.locate.index import load_index
from geoloc_core.locate.locators import load_locator
from geoloc_core.locate.together import _time_taken
from geoloc_core.regions.boundaries import BoundaryError, boundary_area, read_boundary
from geoloc_core.runs.folders import Folder
from geoloc_core.server import access, jobqueue
from views.common import plain

REPO = Path(__file__).resolve().parents[2]


class Payload:
    """Unpickling this would run `touch MARKER`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def _evil(path: Path, marker: Path) -> Path:
    path.write_bytes(pickle.dumps({"state_dict": Payload(marker)}))
    return path


@pytest.mark.slow  # a tiny encoder's checkpoint or a fine-tuning round
def test_a_pickled_checkpoint_is_refused_without_running_it(tmp_path, tiny_checkpoint):
    marker = tmp_path / "pwned"
    with pytest.raises(pickle.UnpicklingError):
        load_encoder(TINY.name, _evil(tmp_path / "evil.pt", marker), device="cpu")
    assert not marker.exists()


@pytest.mark.slow  # a tiny encoder's checkpoint or a fine-tuning round
def test_a_tampered_training_checkpoint_is_refused_on_resume(tiny_run, tmp_path):
    cfg = FinetuneConfig(rounds=1, epochs=1, unfrozen_blocks=1, batch_size=8, device="cpu")
    out = tmp_path / "ft"
    list(ft.finetune_rounds(tiny_run, cfg, out_dir=out))
    marker = tmp_path / "pwned"
    _evil(out / "checkpoints" / "last.pt", marker)
    with pytest.raises(pickle.UnpicklingError):
        list(ft.finetune_rounds(tiny_run, cfg, out_dir=out))
    assert not marker.exists()


@pytest.mark.slow  # a tiny encoder's checkpoint or a fine-tuning round
def test_indexes_and_locators_load_without_pickle(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(RuntimeError):  # faiss's own format: a pickle is just bad bytes to it
        load_index(_evil(tmp_path / "index.faiss", marker))
    (tmp_path / "v.json").write_text('{"kind": "verifier", "config": {}, "in_dim": 4, "extent_rad": 0.1}')
    with pytest.raises(Exception, match="(?i)header|safetensors|deserializ"):
        load_locator(_evil(tmp_path / "v.safetensors", marker))
    assert not marker.exists()


def test_upload_and_pixel_limits_are_set():
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] == 50  # MB; Streamlit refuses bigger uploads itself
    assert server_config().max_pixels == 100_000_000
    with pytest.raises(ImageDecodeError, match="image too large"):  # Pillow's own cap, past 179 MP
        decode_image(png_bomb(15_000))  # 225 megapixels declared: refused before any pixel is decoded


# issue 31, one attack per row -------------------------------------------------------------------

CHILD = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_CPU, ({cpu_s}, {cpu_s}))  # a regression fails here rather than hanging the suite
{imports}
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = {{}}
try:
{attack}
except Exception as exc:  # what the caller is told
    result["error"] = type(exc).__name__ + ": " + str(exc)
result["grown_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps(result))
"""


def _child(imports: str, attack: str, env: dict[str, str] | None = None, cpu_s: int = 60) -> dict:
    """Run `attack` (statements that may set `result[...]`) after `imports` in a fresh Python with the server settings
    `env`; returns `result`, with the error raised (if any) and how far max RSS grew during the attack, in MB."""
    code = CHILD.format(cpu_s=cpu_s, imports=imports, attack="\n".join("    " + line for line in attack.splitlines()))
    environ = {**os.environ, "PYTHONPATH": str(REPO), "GEOLOC_CONFIG": os.devnull, **(env or {})}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ, cwd=REPO)
    assert proc.returncode == 0, f"the child died (rc {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _shapefile_zip(path: Path, vertices: int) -> Path:
    """A zipped Shapefile of one polygon whose ring repeats one small square `vertices` / 4 times: about 1,000:1."""
    square = struct.pack("<8d", 0, 0, 1, 0, 1, 1, 0, 0)
    content = struct.pack("<i4dii", 5, 0, 0, 1, 1, 1, vertices) + struct.pack("<i", 0) + square * (vertices // 4)
    record = struct.pack(">ii", 1, len(content) // 2) + content

    def header(words: int) -> bytes:
        return struct.pack(">7i", 9994, 0, 0, 0, 0, 0, words) + struct.pack("<2i8d", 1000, 5, 0, 0, 1, 1, 0, 0, 0, 0)

    shp = header((100 + len(record)) // 2) + record
    shx = header(54) + struct.pack(">ii", 50, len(content) // 2)
    dbf = (struct.pack("<B3BIHH20x", 3, 124, 1, 1, 1, 32 + 32 + 1, 5) + b"id".ljust(11, b"\0") + b"N" + b"\0" * 4
           + bytes([4, 0]) + b"\0" * 14 + b"\r" + b"    1" + b"\x1a")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("bomb.shp", shp)
        z.writestr("bomb.shx", shx)
        z.writestr("bomb.dbf", dbf)
    return path


def test_row1_a_zipped_shapefile_of_repeated_vertices_is_refused_before_it_is_parsed(tmp_path):
    bomb = _shapefile_zip(tmp_path / "bomb.zip", 400_000)  # 6.4 MB of .shp in a few kB of zip
    assert bomb.stat().st_size < 100_000
    imports = "from geoloc_core.regions.boundaries import boundary_area"
    got = _child(imports, f"boundary_area({str(bomb)!r})", {"GEOLOC_MAX_BOUNDARY_VERTICES": "100000"})
    assert "BoundaryError" in got.get("error", "") and "max_boundary_vertices" in got["error"], got
    assert got["grown_mb"] < 15, got  # before: parsed whole (killed at the CPU cap here; +232 MB for 2 M vertices)
    got = _child(imports, f"boundary_area({str(bomb)!r})", {"GEOLOC_MAX_BOUNDARY_MB": "1"})
    assert "unzipped is too large" in got.get("error", "") and "max_boundary_mb" in got["error"], got
    small = _shapefile_zip(tmp_path / "small.zip", 8)
    assert read_boundary(small).area == pytest.approx(0.5)  # a real Shapefile still reads


def test_row1_an_upload_within_the_limits_whose_reading_blows_up_costs_a_capped_child_not_the_app(tmp_path):
    """One square repeated 50,000 times passes the byte and vertex checks, and GEOS' repair of that ring takes over a
    gigabyte: the app reads uploads in a child process whose resident memory is capped (`max_parse_mb`)."""
    bomb = _shapefile_zip(tmp_path / "bomb.zip", 200_000)
    imports = "from geoloc_core.regions.boundaries import boundary_area"
    got = _child(imports, f"boundary_area({str(bomb)!r}, isolated=True)", {"GEOLOC_MAX_PARSE_MB": "300"})
    assert "BoundaryError" in got.get("error", "") and "max_parse_mb" in got["error"], got
    assert got["grown_mb"] < 15, got  # the app's process; before: read in it, past 300 MB (here: the CPU cap)
    small = _shapefile_zip(tmp_path / "small.zip", 8)
    assert boundary_area(small, isolated=True).geometry.equals(read_boundary(small))  # a real Shapefile still reads
    (tmp_path / "bad.kml").write_text("<kml><Placemark>")
    with pytest.raises(BoundaryError, match="not well-formed KML"):  # the child's own refusal, said as it said it
        boundary_area(tmp_path / "bad.kml", isolated=True)


def test_row2_a_16_bit_image_decodes_at_8_bits_and_a_huge_one_is_refused(tmp_path):
    side = 3000
    buf = io.BytesIO()
    Image.fromarray(np.zeros((side, side), np.uint16)).save(buf, "PNG")  # all zero: 18 kB on disk
    (tmp_path / "deep.png").write_bytes(buf.getvalue())
    got = _child("from geoloc_core.base.images import decode_image\nfrom pathlib import Path",
                 f"result['size'] = decode_image(Path({str(tmp_path / 'deep.png')!r}).read_bytes()).size")
    assert got.get("size") == [side, side], got
    assert got["grown_mb"] * 2**20 / side**2 < 10, got  # bytes per pixel; before: 21 (a float64 copy of the image)
    (tmp_path / "huge.png").write_bytes(png_bomb(13_000))  # 169 MP: under Pillow's own cap, over the server's
    got = _child("from geoloc_core.base.images import decode_image\nfrom pathlib import Path",
                 f"decode_image(Path({str(tmp_path / 'huge.png')!r}).read_bytes())")
    assert "ImageDecodeError" in got.get("error", "") and "max_pixels" in got["error"], got
    assert got["grown_mb"] < 50, got  # before: decoded, +500 MB


SECRET = "password=hunter2"


def test_row3_a_manifest_or_gpx_linked_out_of_its_folder_is_not_read_and_no_error_quotes_a_file(tmp_path):
    secrets = tmp_path / "credentials.txt"
    secrets.write_text(SECRET + "\nuser=admin\n")
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "manifest.csv").symlink_to(secrets)
    with pytest.raises(ValueError) as caught:
        load_photos(folder)
    assert "symbolic link" in str(caught.value) and "hunter2" not in str(caught.value)  # before: quoted the first line
    with pytest.raises(ValueError) as caught:  # a real file in the folder that is not a manifest: named, not quoted
        read_manifest(secrets, lambda cell: False)
    assert "hunter2" not in str(caught.value) and "first row has 1 cells" in str(caught.value)
    gpx = tmp_path / "tracks"
    gpx.mkdir()
    (gpx / "trip.gpx").symlink_to(secrets)
    with pytest.raises(ValueError, match="symbolic link") as caught:
        read_gpx(gpx)
    assert "hunter2" not in str(caught.value)


def test_row3_a_job_sees_none_of_the_servers_environment_but_what_it_needs(tmp_path, monkeypatch):
    monkeypatch.setenv("GEOLOC_TEST_SECRET", SECRET)
    out = tmp_path / "env.json"
    monkeypatch.setattr(jobqueue, "JOB_COMMAND", (sys.executable, "-c",
                                                  "import json, os, sys; json.dump(dict(os.environ), open(sys.argv[1], "
                                                  "'w'))"))
    jobqueue.spawn(Folder(tmp_path / "job"), [str(out)])
    deadline = time.time() + 60  # waits for the child's file; nothing is asserted about the time it took
    while not out.exists() or not out.read_text().endswith("}"):
        assert time.time() < deadline, "the job never wrote its environment"
        time.sleep(0.1)
    env = json.loads(out.read_text())
    assert SECRET not in json.dumps(env)  # before: the job inherited the server's whole environment
    assert set(env) <= {*access.JOB_INHERITED, *access.job_environment()}
    assert env["GEOLOC_MAX_GPX_MB"] == str(server_config().max_gpx_mb)  # the limits reach the job


def _padded_workbook(path: Path, far_cell: bool) -> Path:
    """An XLSX whose sheet declares A1:XFD1048576; with `far_cell`, one cell really sits at XFD1048576."""
    from openpyxl import Workbook

    book = Workbook()
    sheet = book.active
    for row in (("path", "lat", "lon"), ("a.jpg", 45.1, 15.1), ("b.jpg", 45.2, 15.2)):
        sheet.append(row)
    if far_cell:
        sheet["XFD1048576"] = "x"
    book.save(path)
    with zipfile.ZipFile(path) as z:
        parts = {n: z.read(n) for n in z.namelist()}
    sheet_xml = "xl/worksheets/sheet1.xml"
    parts[sheet_xml] = re.sub(rb'<dimension ref="[^"]*"', b'<dimension ref="A1:XFD1048576"', parts[sheet_xml])
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in parts.items():
            z.writestr(name, data)
    return path


def test_row4_an_xlsx_that_declares_a_million_rows_by_16384_columns_is_not_padded(tmp_path):
    imports = "from pathlib import Path\nfrom geoloc_core.ingest.manifests import read_manifest"
    lying = _padded_workbook(tmp_path / "lying.xlsx", far_cell=False)
    got = _child(imports, f"result['rows'] = len(read_manifest(Path({str(lying)!r}), lambda c: True).rows)", cpu_s=30)
    assert got.get("rows") == 2 and got["grown_mb"] < 50, got  # before: padded to 17 billion cells, minutes of CPU
    far = _padded_workbook(tmp_path / "far.xlsx", far_cell=True)
    got = _child(imports, f"read_manifest(Path({str(far)!r}), lambda c: True)", {"GEOLOC_MAX_MANIFEST_CELLS": "100000"},
                 cpu_s=30)
    assert "max_manifest_cells" in got.get("error", ""), got


def test_row5_a_gpx_full_of_xmlns_parses_in_one_pass_and_a_large_one_is_refused(tmp_path):
    filler = " xmlns" * 350_000  # 2 MB, after the last '=': gpxpy's namespace regex scans to the end from each one
    gpx = tmp_path / "slow.gpx"
    gpx.write_text('<?xml version="1.0"?><gpx version="1.1" '
                   'xmlns="http://www.topografix.com/GPX/1/1"><trk><trkseg><trkpt lat="45.1" '
                   f'lon="15.1"><time>2024-06-01T10:00:00Z</time></trkpt></trkseg></trk></gpx><!--{filler}-->')
    imports = "from geoloc_core.ingest.tracks import read_gpx"
    got = _child(imports, f"result['points'] = len(read_gpx({str(gpx)!r}).time_s)", cpu_s=20)
    assert got.get("points") == 1, got  # before: killed at the CPU cap (3 s at 240 kB, about 8 h at 24 MB)
    got = _child(imports, f"read_gpx({str(gpx)!r})", {"GEOLOC_MAX_GPX_MB": "1"})
    assert "max_gpx_mb" in got.get("error", ""), got


GML = ('<?xml version="1.0"?><ogr:FeatureCollection xmlns:ogr="http://ogr.maptools.org/" '
       'xmlns:gml="http://www.opengis.net/gml"><gml:featureMember><ogr:a fid="a.0"><ogr:geometryProperty><gml:Polygon>'
       "<gml:outerBoundaryIs><gml:LinearRing><gml:coordinates>0,0 1,0 1,1 0,0</gml:coordinates></gml:LinearRing>"
       "</gml:outerBoundaryIs></gml:Polygon></ogr:geometryProperty></ogr:a></gml:featureMember></ogr:FeatureCollection>")


def test_row6_a_boundary_is_opened_only_by_the_driver_its_extension_names(tmp_path):
    (tmp_path / "boundary.json").write_text(GML)
    with pytest.raises(BoundaryError, match="not a readable GeoJSON file"):
        read_boundary(tmp_path / "boundary.json")  # before: GDAL's GML driver took it
    (tmp_path / "boundary.gml").write_text(GML)
    with pytest.raises(BoundaryError, match="a boundary is a GeoPackage"):
        read_boundary(tmp_path / "boundary.gml")


def test_row7_parsers_errors_are_caught_and_said_not_raised_as_tracebacks(tmp_path):
    (tmp_path / "bad.kml").write_text('<kml xmlns="http://www.opengis.net/kml/2.2"><Document><Placemark>')
    with pytest.raises(BoundaryError, match="not well-formed KML"):  # a ValueError, which the page says
        read_boundary(tmp_path / "bad.kml")  # before: ET.ParseError escaped the page
    (tmp_path / "bomb.png").write_bytes(png_bomb(15_000))  # 225 MP: Pillow's DecompressionBombError on open
    assert _time_taken(tmp_path / "bomb.png") is None  # before: escaped "together when taken close in time"
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["client"]["showErrorDetails"] == "none" and config["server"]["address"] == "127.0.0.1"


@pytest.mark.parametrize("name",
                         ["[Session expired – sign in](http://x)", "![](http://x/i.png)", ":red[admin]", "http://x.io",
                          "see www.x.io",
                                  "<img src=x onerror=alert(1)>", "**bold** _it_ `code` # head"])
def test_row8_user_text_is_shown_as_plain_text(name):
    shown = plain(name)
    unescaped = re.sub(r"\\(.)", "", shown)  # CommonMark: a backslash-escaped mark is a literal character
    assert not re.search(r"[\[\]()!/<>*_`#]", unescaped), shown  # no mark left that could open a link, image or style
    assert re.sub(r"\\(.)", r"\1", shown) == name  # and the reader sees exactly what was typed


def test_row9_artefacts_honour_the_umask(tmp_path):
    code = (f"from pathlib import Path\nfrom geoloc_core.base import storage\n"
            f"storage.write_json(Path({str(tmp_path / 'a.json')!r}), {{}})\n"
            f"storage.append_jsonl(Path({str(tmp_path / 'm.jsonl')!r}), {{}})")
    subprocess.run(["bash", "-c", f'umask 077 && exec "{sys.executable}" -c "$0"', code], check=True,
                   env={**os.environ, "PYTHONPATH": str(REPO)})
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o600  # before: 0644 whatever the umask
    assert (tmp_path / "m.jsonl").stat().st_mode & 0o777 == 0o600
    assert storage.FILE_MODE & 0o002 == 0  # and this process's umask is never widened


def test_the_torch_floor_excludes_cve_2025_32434():
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    floor = next(d for d in deps if d.startswith("torch>="))
    assert tuple(map(int, floor.removeprefix("torch>=").split("."))) >= (2, 6)  # before: 2.4
