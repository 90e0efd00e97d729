"""Manifests as analysts' spreadsheets save them: Excel in a European locale, BOMs, legacy code pages, XLSX,
degrees-minutes-seconds, Windows paths. Each file is written here as the program would write it."""

import codecs
import re

import pytest
from openpyxl import Workbook

from conftest import jpeg_bytes, textured
from geoloc_core.cli import main
from geoloc_core.ingest.manifests import parse_coordinate
from geoloc_core.ingest.photos import load_photos


def photos(root, names):
    """A distinct real JPEG at each relative path."""
    for i, name in enumerate(names):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(jpeg_bytes(textured(100 + i)))


def reasons(report):
    return {r.path: r.reason for r in report.rejected}


def test_excel_semicolon_decimal_comma_bom_and_windows_paths(tmp_path):
    """The issue's manifest: Excel, European locale, "CSV UTF-8" (with BOM), `imgs\\p4.jpg`, `45,9008;16,7002`."""
    photos(tmp_path, ["imgs/p4.jpg", "imgs/sub/p.JPG"])
    text = "path;lat;lon;note\r\nimgs\\p4.jpg;45,9008;16,7002;trg\r\nimgs/sub\\p.JPG;-33,5;151,25;\"a; b\"\r\n"
    (tmp_path / "photos.csv").write_bytes(codecs.BOM_UTF8 + text.encode("utf-8"))
    table, report = load_photos(tmp_path / "photos.csv")
    assert not report.rejected and not report.warnings
    assert table.frame["path"].tolist() == ["imgs/p4.jpg", "imgs/sub/p.JPG"]  # as on disk, POSIX separators
    assert table.lat_deg.tolist() == [45.9008, -33.5] and table.lon_deg.tolist() == [16.7002, 151.25]
    assert table.frame["note"].tolist() == ["trg", "a; b"]  # other columns carried along, quoting honoured
    assert all(p.is_file() for p in table.abs_paths())


@pytest.mark.parametrize("encoding,delimiter", [("utf-16", "\t"), ("utf-8", ","), ("utf-8", "|")])
def test_tab_comma_and_pipe_separated_manifests(tmp_path, encoding, delimiter):
    """Excel's "Unicode text" is UTF-16 with tabs; a comma-separated file quotes its decimal commas."""
    photos(tmp_path, ["a.jpg", "b.jpg"])
    lat_b = '"45,5"' if delimiter == "," else "45,5"
    text = (f"file{delimiter}latitude{delimiter}longitude\n"
            f"a.jpg{delimiter}44.1{delimiter}15.2\nb.jpg{delimiter}{lat_b}{delimiter}16\n")
    (tmp_path / "m.txt").write_bytes(text.encode(encoding))
    table, report = load_photos(tmp_path / "m.txt")
    assert not report.rejected
    assert table.lat_deg.tolist() == [44.1, 45.5] and table.lon_deg.tolist() == [15.2, 16.0]


def test_the_header_settles_a_delimiter_the_cells_would_mislead(tmp_path):
    """Notes like `x;"y";z` in a comma-separated file make csv.Sniffer answer ';':
    only ',' splits the header into columns."""
    photos(tmp_path, ["a.jpg", "b.jpg"])
    (tmp_path / "m.csv").write_text('path,lat,lon,note\na.jpg,45.1,16.1,x;"y";z\nb.jpg,45.2,16.2,u;"v";w\n')
    table, report = load_photos(tmp_path / "m.csv")
    assert table.frame["note"].tolist() == ['x;"y";z', 'u;"v";w'] and not report.rejected


def test_windows_1252_manifest_finds_accented_names(tmp_path):
    photos(tmp_path, ["café.jpg", "Müller.jpg"])
    (tmp_path / "m.csv").write_bytes("path;lat;lon\ncafé.jpg;48,1;11,5\nMüller.jpg;48,2;11,6\n".encode("cp1252"))
    table, report = load_photos(tmp_path / "m.csv")
    assert sorted(table.frame["path"]) == ["Müller.jpg", "café.jpg"] and not report.rejected
    assert "read as Windows-1252" in report.warnings[0] and "2 of 2" in report.warnings[0]


def test_windows_1250_manifest_is_told_apart_by_the_files_it_finds(tmp_path):
    """Croatian Excel saves Windows-1250: č, ć, đ are bytes that Windows-1252 reads as other letters."""
    names = ["Čakovec.jpg", "Đakovo.jpg", "Šibenik.jpg"]
    photos(tmp_path, names)
    text = "path;lat;lon\n" + "".join(f"{n};45,{i};16,{i}\n" for i, n in enumerate(names, 1))
    (tmp_path / "m.csv").write_bytes(text.encode("cp1250"))
    table, report = load_photos(tmp_path / "m.csv")
    assert sorted(table.frame["path"]) == sorted(names) and not report.rejected
    assert "read as Windows-1250" in report.warnings[0]


def test_xlsx_manifest_with_numbers_dms_text_and_a_title_sheet(tmp_path):
    photos(tmp_path, ["imgs/a.jpg", "imgs/b.jpg", "imgs/c.jpg"])
    book = Workbook()
    book.active.title = "About"
    book.active.append(["Trip photos, June 2024"])  # a sheet without the columns comes first
    sheet = book.create_sheet("Photos")
    sheet.append(["Image", "Latitude", "Longitude", "Place"])
    sheet.append(["imgs\\a.jpg", 45.9008, 16.7002, "Zagreb"])  # numbers as numbers
    sheet.append([None, None, None, None])  # an empty row is skipped
    sheet.append(["imgs/b.jpg", "45°54'03\"N", "16°42'00.7\"E", "Sesvete"])  # DMS as text
    sheet.append(["imgs/c.jpg", "45°61'N", "16 E", "typo"])  # row 5: minutes out of range
    book.save(tmp_path / "trip.xlsx")
    table, report = load_photos(tmp_path / "trip.xlsx")
    assert (table.frame["path"].tolist() == ["imgs/a.jpg", "imgs/b.jpg"] and table.frame["Place"].tolist()
            == ["Zagreb", "Sesvete"])
    assert table.lat_deg[0] == 45.9008 and abs(table.lat_deg[1] - (45 + 54 / 60 + 3 / 3600)) < 1e-12
    assert abs(table.lon_deg[1] - (16 + 42 / 60 + 0.7 / 3600)) < 1e-12
    assert reasons(report) == {"imgs/c.jpg": "row 5, column 'Latitude': \"45°61'N\" has minutes 61 (must be below 60)"}


def test_a_folder_finds_its_manifest_xlsx(tmp_path):
    photos(tmp_path, ["a.jpg"])
    book = Workbook()
    book.active.append(["path", "lat", "lon"])
    book.active.append(["a.jpg", "S 33.5", "W 70.25"])
    book.save(tmp_path / "manifest.xlsx")
    table, report = load_photos(tmp_path)
    assert (table.lat_deg.tolist(), table.lon_deg.tolist(), report.n_candidates) == ([-33.5], [-70.25], 1)


@pytest.mark.parametrize("text,axis,degrees", [
    ("45.9008", "latitude", 45.9008), ("45,9008", "latitude", 45.9008), ("-45.9", "latitude", -45.9),
    ("+16", "longitude", 16), ("−45.9", "latitude", -45.9),  # the Unicode minus sign a word processor makes
    ("45°54'03\"N", "latitude", 45 + 54 / 60 + 3 / 3600), ("16°42'00.7\"E", "longitude", 16 + 42 / 60 + 0.7 / 3600),
    ("16°42'00,7\"W", "longitude", -(16 + 42 / 60 + 0.7 / 3600)),
    ("45º 54′ 03″ S", "latitude", -(45 + 54 / 60 + 3 / 3600)),
    ("45°54’03”N", "latitude", 45 + 54 / 60 + 3 / 3600),  # Excel's autocorrected quotes
    ("45°54'03''N", "latitude", 45 + 54 / 60 + 3 / 3600), ("45 54 03 N", "latitude", 45 + 54 / 60 + 3 / 3600),
    ("45°54.05'", "latitude", 45 + 54.05 / 60), ("45.9008 N", "latitude", 45.9008), ("45.9008N", "latitude", 45.9008),
    ("S 33.5", "latitude", -33.5), ("N45°54'", "latitude", 45.9), ("w 70.5", "longitude", -70.5),
    ("45.9°", "latitude", 45.9), ("95", "latitude", 95.0),  # out of range is judged later, by value
])
def test_coordinates_in_every_notation(text, axis, degrees):
    assert parse_coordinate(text, axis) == pytest.approx(degrees, abs=1e-12)


@pytest.mark.parametrize("text,axis,why", [
    ("nan", "latitude", "not a number"), ("nan", "longitude", "not a number"), ("abc", "latitude", "not a number"),
    ("1.234,5", "latitude", "not a number"), ("45°61'N", "latitude", "minutes 61"),
    ("45°30'75\"", "latitude", "seconds 75"),
    ("16 E", "latitude", "is a longitude (E) in the latitude column"), ("45 N", "longitude", "is a latitude (N)"),
    ("-45 S", "latitude", "both a sign and a hemisphere"), ("N 45 S", "latitude", "two hemisphere letters"),
    ("45.5°30'", "latitude", "fraction before its last part"), ("45'", "latitude", "not a number"),
    ("45 X", "latitude", "not a hemisphere"),
])
def test_unreadable_coordinates_say_why(text, axis, why):
    with pytest.raises(ValueError, match=re.escape(why)):
        parse_coordinate(text, axis)


def test_unreadable_cells_name_row_column_and_text_and_the_rest_go_on(tmp_path):
    photos(tmp_path, ["ok.jpg", "bad.jpg", "empty.jpg", "range.jpg", "ragged.jpg"])
    (tmp_path / "manifest.csv").write_text(
        "path,lat,lon\n"
        "ok.jpg,45°54'03\"N,16.7\n"  # row 2
        "bad.jpg,45.9,sixteen\n"  # row 3
        "empty.jpg,,16.7\n"  # row 4
        "\n"  # a blank line is skipped, yet counted: rows keep the numbers a spreadsheet shows
        "range.jpg,95.0,16.7\n"  # row 6
        "ragged.jpg,45,9,16,7\n"  # row 7: unquoted decimal commas in a comma-separated file
    )
    table, report = load_photos(tmp_path)
    assert table.frame["path"].tolist() == ["ok.jpg"]
    got = reasons(report)
    assert got["bad.jpg"].startswith("row 3, column 'lon': 'sixteen' is not a number")
    assert got["empty.jpg"] == "row 4, column 'lat': coordinate missing (empty cell)"
    # existing behaviour, now with its row
    assert got["range.jpg"] == "row 6: coordinate out of range (lat=95.0, lon=16.7)"
    assert got["ragged.jpg"].startswith("row 7 has 5 cells, the header 3 (a decimal comma")
    assert report.n_candidates == 5 and report.n_accepted == 1


def test_paths_with_windows_separators_other_case_or_nowhere(tmp_path):
    photos(tmp_path, ["imgs/p4.jpg", "imgs/sub/p.JPG", "Photos/IMG_0001.JPG", "twin.jpg", "TWIN.jpg"])
    (tmp_path / "m.csv").write_text(
        "path,lat,lon\n"
        "imgs\\p4.jpg,45.1,16.1\n"
        "imgs/sub\\p.JPG,45.2,16.2\n"
        "photos\\img_0001.jpg,45.3,16.3\n"  # Windows does not mind the case; a Linux disk does
        "Twin.jpg,45.4,16.4\n"  # two files differ from it in case only: which one is meant?
        "C:\\Users\\ana\\trip\\p5.jpg,45.5,16.5\n"
        "..\\..\\etc\\passwd,45.6,16.6\n"
        "imgs\\p4.JPG,45.7,16.7\n"  # the first row's file again, by another spelling
    )
    table, report = load_photos(tmp_path / "m.csv")
    assert table.frame["path"].tolist() == ["imgs/p4.jpg", "imgs/sub/p.JPG", "Photos/IMG_0001.JPG"]
    got = reasons(report)
    assert got["Twin.jpg"] == "row 5: file not found as written; 2 differ from it in case only (TWIN.jpg, twin.jpg)"
    assert "Windows absolute path" in got["C:\\Users\\ana\\trip\\p5.jpg"]
    assert "path outside the dataset root" in got["..\\..\\etc\\passwd"]
    assert got["imgs\\p4.JPG"] == "row 8: duplicate row (the same path is listed earlier)"


def test_folder_scan_takes_upper_case_extensions(tmp_path):
    for i, name in enumerate(["DSC_0001.JPG", "b.Jpeg", "c.PNG"]):
        (tmp_path / name).write_bytes(jpeg_bytes(textured(i), gps=(45 + i / 10, 16.0)))
    table, report = load_photos(tmp_path)
    assert sorted(table.frame["path"]) == ["DSC_0001.JPG", "b.Jpeg", "c.PNG"] and not report.rejected


def test_cli_ingests_an_xlsx_and_a_workbook_it_cannot_read_fails_clearly(tmp_path, capsys, caplog):
    photos(tmp_path, ["a.jpg"])
    book = Workbook()
    book.active.append(["path", "lat", "lon"])
    book.active.append(["a.jpg", "45°54'03\"N", "16°42'00.7\"E"])
    book.save(tmp_path / "trip.xlsx")
    assert main(["ingest", str(tmp_path / "trip.xlsx"), "--run", str(tmp_path / "run")]) == 0
    assert "1 photos with a location in 1 places, 0 to locate, 0 rejected of 1" in capsys.readouterr().out
    (tmp_path / "old.xls").write_bytes(b"\xd0\xcf\x11\xe0")
    assert main(["ingest", str(tmp_path / "old.xls"), "--run", str(tmp_path / "run2")]) == 2
    assert "old.xls: .xls workbooks are not read; save it as .xlsx or .csv" in caplog.text
