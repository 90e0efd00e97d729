"""A manifest as an analyst's spreadsheet saves it -> rows of path, lat_deg, lon_deg (+ the other columns).

What arrives from Excel, LibreOffice, QGIS or Google Earth exports, and is read here:
- CSV with `,`, `;`, tab or `|` between cells (`csv.Sniffer` finds which), decimal commas (`45,9008`);
- UTF-8 with or without a byte-order mark, UTF-16 (Excel's "Unicode text"), and legacy Windows-1252 /
  Windows-1250 (Western / Central European Excel): of those two, the one under which more of the
  listed files exist is taken, and a warning says so;
- XLSX workbooks (`openpyxl`): the first sheet that has the columns;
- coordinates in decimal degrees, degrees-minutes-seconds and hemisphere letters (`45°54'03"N`,
  `16°42'00.7"E`, `45 54 3.2 N`, `45°54.05'`, `45.9008 N`, `S 33.5`, `-45.9`).

A cell that cannot be read rejects its row (never the file), with the row as the spreadsheet numbers
it (the header is row 1), the column and the text found. A message quotes no other text of the file (a
"manifest" may be any file a link points at), and a file past the server's limits (`ServerConfig.max_manifest_mb`,
`max_manifest_cells`: an XLSX sheet's declared size does not count, the cells read do) is refused as it is read.
"""

from __future__ import annotations

import codecs
import csv
import io
import math
import re
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from geoloc_core.base.errors import UserError
from geoloc_core.config import server_config, too_large

PATH_COLUMNS = ("path", "img_file", "img_id", "image", "image_path", "file", "filename")
LAT_COLUMNS = ("lat", "latitude", "lat_deg")
LON_COLUMNS = ("lon", "lng", "long", "longitude", "lon_deg")
EXCEL_SUFFIXES = (".xlsx", ".xlsm")
_DELIMITERS = ",;\t|"
_LEGACY_ENCODINGS = {"cp1252": "Windows-1252 (Western European)", "cp1250": "Windows-1250 (Central European)"}


@dataclass(frozen=True)
class Sheet:
    """A table as read: its header and its rows, each with the row number a spreadsheet shows (header = 1)."""

    header: list[str]
    rows: list[tuple[int, list[str]]]
    described: str  # how it was read ("';'-separated, UTF-8"), for messages


@dataclass(frozen=True)
class Manifest:
    """Readable rows (indexed by spreadsheet row number) and, for each unreadable one, (path text, reason)."""

    rows: pd.DataFrame  # path (as written), lat_deg, lon_deg (NaN where `unplaced` rows are kept), extra columns
    rejected: list[tuple[str, str]]
    warnings: list[str]


def find_manifest(given: str, data: str) -> str:
    """Where a manifest the user named is: as given (from the working folder, or absolute), else beside the data
    folder `data` (inside it, or beside a manifest given as the data)."""
    beside = Path(data) if Path(data).is_dir() else Path(data).parent
    for path in (Path(given), beside / given):
        if path.is_file():
            return str(path)
    raise UserError(f"no manifest {given}: looked for {Path(given).absolute()} and {(beside / given).absolute()}",
                    f"Give the manifest's path from the working folder ({Path.cwd()}) or from {beside}")


def read_manifest(path: Path, exists: Callable[[str], bool], keep_unplaced: bool = False) -> Manifest:
    """Read a CSV / TSV / XLSX manifest.

    Args:
        path: the manifest file.
        exists: whether a path cell names an existing file; it picks the code page of a text that is not UTF-8.
        keep_unplaced: keep rows whose lat and lon cells are both empty (a GPX track will place them) instead of
            rejecting them.
    """
    warnings: list[str] = []
    sheets = _read_workbook(path) if path.suffix.lower() in EXCEL_SUFFIXES else _read_texts(path)
    usable = [(sheet, columns) for sheet in sheets if None not in (columns := _columns(sheet.header))]
    if not usable:
        raise ValueError(
            f"{path}: manifest needs a file column ({'/'.join(PATH_COLUMNS)}) and lat/lon columns "
            f"({'/'.join(LAT_COLUMNS)}, {'/'.join(LON_COLUMNS)}); its first row has {len(sheets[0].header)} cells, "
            f"none of them those (read as {sheets[0].described})"
        )
    sheet, (path_i, lat_i, lon_i) = usable[0]  # a workbook's first sheet with the columns
    # one reading per code page: the one that finds most files
    if sheet.described.startswith((*_LEGACY_ENCODINGS.values(), "Latin-1")):
        found = [sum(exists(cells[cols[0]].strip()) for _, cells in reading.rows if len(cells) > cols[0])
                 for reading, cols in usable]
        best = int(np.argmax(found))  # the first (Windows-1252) on a tie
        sheet, (path_i, lat_i, lon_i) = usable[best]
        warnings.append(f"{path}: not UTF-8; read as {sheet.described.split(',')[0]} "
                        f"({found[best]} of {len(sheet.rows)} listed files found that way)")
    return _parse_rows(path, sheet, path_i, lat_i, lon_i, keep_unplaced, warnings)


def _columns(header: list[str]) -> tuple[int | None, int | None, int | None]:
    lower = [h.lower().strip() for h in header]

    def first(names: Iterable[str]) -> int | None:
        return next((lower.index(n) for n in names if n in lower), None)

    return first(PATH_COLUMNS), first(LAT_COLUMNS), first(LON_COLUMNS)


def _parse_rows(path: Path, sheet: Sheet, path_i: int, lat_i: int, lon_i: int, keep_unplaced: bool,
                warnings: list[str]) -> Manifest:
    header, width = sheet.header, len(sheet.header)
    lat_name, lon_name = header[lat_i], header[lon_i]
    others = [i for i in range(width) if i not in (path_i, lat_i, lon_i)]
    records, index, rejected = [], [], []
    for row, cells in sheet.rows:
        if len(cells) > width and any(c.strip() for c in cells[width:]):
            shown = cells[path_i].strip() if len(cells) > path_i else ""
            rejected.append((shown, f"row {row} has {len(cells)} cells, the header {width} (a decimal comma in a "
                                    "comma-separated file? quote the number or separate cells with ';')"))
            continue
        cells = (cells + [""] * width)[:width]
        lat_text, lon_text = cells[lat_i].strip(), cells[lon_i].strip()
        if keep_unplaced and not lat_text and not lon_text:
            lat, lon = math.nan, math.nan
        else:
            try:
                lat = _cell(row, lat_name, lat_text, "latitude")
                lon = _cell(row, lon_name, lon_text, "longitude")
            except ValueError as exc:
                rejected.append((cells[path_i].strip(), str(exc)))
                continue
        records.append([cells[path_i].strip(), lat, lon] + [cells[i] for i in others])
        index.append(row)
    extras = _unique_names({i: header[i] for i in others}, taken={"path", "lat_deg", "lon_deg"})
    rows = pd.DataFrame(records, columns=["path", "lat_deg", "lon_deg", *extras], index=pd.Index(index, name="row"))
    rows = rows.astype({"lat_deg": np.float64, "lon_deg": np.float64})
    lat_ok, lon_ok = rows["lat_deg"].abs() <= 90, rows["lon_deg"].abs() <= 90
    placed = rows["lat_deg"].notna()
    if (~lat_ok & placed).sum() > 0 and lon_ok[placed].all() and (~lat_ok[placed]).mean() > 0.5:
        warnings.append(
            f"{path}: columns {lat_name!r}/{lon_name!r} look swapped (most latitudes beyond ±90°, all "
            "longitudes within ±90°); read them the other way round"
        )
        rows[["lat_deg", "lon_deg"]] = rows[["lon_deg", "lat_deg"]].to_numpy()
    return Manifest(rows=rows, rejected=rejected, warnings=warnings)


def _cell(row: int, column: str, text: str, axis: str) -> float:
    if not text:
        raise ValueError(f"row {row}, column {column!r}: coordinate missing (empty cell)")
    try:
        return parse_coordinate(text, axis)
    except ValueError as exc:
        raise ValueError(f"row {row}, column {column!r}: {text!r} {exc}") from None


def _unique_names(names: dict[int, str], taken: set[str]) -> list[str]:
    """Header names (by position) usable as columns: a blank one becomes `column_N`, a repeated one gets `.1`, `.2`."""
    out, seen = [], set(taken)
    for i, name in names.items():
        base = name.strip() or f"column_{i + 1}"
        unique, k = base, 0
        while unique in seen:
            k += 1
            unique = f"{base}.{k}"
        seen.add(unique)
        out.append(unique)
    return out


# coordinates -------------------------------------------------------------------------------------

_DECIMAL = re.compile(r"[+-]?(?:\d+(?:[.,]\d*)?|[.,]\d+)(?:e[+-]?\d+)?", re.IGNORECASE)
_TOKEN = re.compile(r"\d+(?:[.,]\d+)?|\S")
_UNITS = "°'\""
_SAME = str.maketrans({"º": "°", "˚": "°", "′": "'", "’": "'", "‘": "'", "´": "'", "″": '"', "”": '"', "“": '"',
                       "−": "-"})
_HEMISPHERES = {"latitude": {"N": 1, "S": -1}, "longitude": {"E": 1, "W": -1}}
_LEAD_LETTER = re.compile(r"([A-Z])\s*(?=[\d.+-])")  # `S 33.5`, `N45°54'`
_TRAIL_LETTER = re.compile(r"(?<=[\d°'\".\s])([A-Z])$")  # `45.9 N`, `45°54'03"N`


def parse_coordinate(text: str, axis: str) -> float:
    """Degrees from a cell: decimal (`45.9008`, `45,9008`, `-45.9`), with a hemisphere letter before or after
    (`45.9008 N`, `S 33.5`), or degrees-minutes-seconds (`45°54'03"N`, `16°42'00.7"E`, `45 54 3 N`, `45°54.05'`).

    `axis` is "latitude" or "longitude". Range is not checked here (an out-of-range coordinate is rejected
    later, by value). Raises ValueError whose message says what is wrong with the text.
    """
    try:
        value = float(text)  # the common case, fast
        if math.isfinite(value):
            return value
    except ValueError:
        pass
    s = text.strip().translate(_SAME).replace("''", '"').upper()
    if _DECIMAL.fullmatch(s):
        return float(s.replace(",", "."))
    lead, trail = _LEAD_LETTER.match(s), _TRAIL_LETTER.search(s)
    if lead and trail:
        raise ValueError("has two hemisphere letters; give one")
    sign, letter = 1, (lead or trail).group(1) if (lead or trail) else ""
    if letter:
        other = "longitude" if axis == "latitude" else "latitude"
        if letter in _HEMISPHERES[other]:
            raise ValueError(f"is a {other} ({letter}) in the {axis} column (are the columns swapped?)")
        if letter not in _HEMISPHERES[axis]:
            raise ValueError(f"has the letter {letter}, not a hemisphere of a {axis} ({'/'.join(_HEMISPHERES[axis])})")
        sign = _HEMISPHERES[axis][letter]
        s = (s[lead.end():] if lead else s[:trail.start()]).strip()
    if s.startswith(("+", "-")):
        if letter:
            raise ValueError(f"has both a sign and a hemisphere letter ({letter}); give one")
        sign, s = (-1 if s[0] == "-" else 1), s[1:].strip()
    return sign * _dms(s)


def _dms(s: str) -> float:
    """`45°54'03.2"`, `45 54 3.2`, `45°54.05'`, `45.9°` -> degrees (no sign, no letter)."""
    parts: list[list[str]] = []  # [number, unit or ""]
    for token in _TOKEN.findall(s):
        if token[0].isdigit():
            parts.append([token, ""])
        elif token in _UNITS and parts and not parts[-1][1]:
            parts[-1][1] = token
        else:
            raise ValueError("is not a number nor degrees-minutes-seconds (e.g. 45°54'03\"N)")
    if not 1 <= len(parts) <= 3 or any(unit and unit != _UNITS[i] for i, (_, unit) in enumerate(parts)):
        raise ValueError("is not a number nor degrees-minutes-seconds (e.g. 45°54'03\"N)")
    values = [float(number.replace(",", ".")) for number, _ in parts]
    if any(v != int(v) for v in values[:-1]):
        raise ValueError("has a fraction before its last part (write 45°54.05' or 45°54'03\", not 45.9°54')")
    for name, v in zip(("minutes", "seconds"), values[1:]):
        if v >= 60:
            raise ValueError(f"has {name} {v:g} (must be below 60)")
    return sum(v / 60**i for i, v in enumerate(values))


# reading the file --------------------------------------------------------------------------------

def _read_texts(path: Path) -> list[Sheet]:
    """A text file's table: one reading, or one per legacy code page where it is not UTF-8."""
    suffix = path.suffix.lower()
    if suffix in (".xls", ".ods", ".numbers"):
        raise ValueError(f"{path}: {suffix} workbooks are not read; save it as .xlsx or .csv")
    _check_size(path, path.stat().st_size)
    data = path.read_bytes()
    if data.startswith(b"PK\x03\x04"):
        raise ValueError(f"{path}: this is a zip file (an .xlsx named {suffix or 'without a suffix'}?); name it .xlsx")
    try:
        return [_read_text(text, described, path) for text, described in _decodings(data)]
    except csv.Error as exc:  # a NUL byte, say
        raise ValueError(f"{path}: not a readable text table ({exc})") from exc


def _decodings(data: bytes) -> list[tuple[str, str]]:
    """(text, encoding in words): one for a file with a byte-order mark or valid UTF-8,
    else one per legacy code page."""
    for bom, codec, name in ((codecs.BOM_UTF8, "utf-8-sig", "UTF-8 with BOM"),
                             (codecs.BOM_UTF16_LE, "utf-16", "UTF-16"), (codecs.BOM_UTF16_BE, "utf-16", "UTF-16")):
        if data.startswith(bom):
            return [(data.decode(codec), name)]
    try:
        return [(data.decode("utf-8"), "UTF-8")]
    except UnicodeDecodeError:
        pass
    out = []
    for codec, name in _LEGACY_ENCODINGS.items():
        try:
            out.append((data.decode(codec), name))
        except UnicodeDecodeError:  # a byte the code page leaves undefined
            continue
    return out or [(data.decode("latin-1"), "Latin-1")]


def _read_text(text: str, encoding: str, path: Path) -> Sheet:
    """One table from text: the delimiter `csv.Sniffer` finds, unless only another one splits the
    header into the columns."""
    sample = text[:65536]
    header = next((line for line in sample.splitlines() if line.strip()), "")
    try:
        delimiter = csv.Sniffer().sniff(sample, delimiters=_DELIMITERS).delimiter
    except csv.Error:  # one column, or too little to tell: the most frequent candidate in the header
        delimiter = max(_DELIMITERS, key=header.count)
    fits = [d for d in _DELIMITERS if None not in _columns(next(csv.reader([header], delimiter=d)))]
    if fits and delimiter not in fits:
        delimiter = fits[0]
    rows = _numbered(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter), lambda cells: cells, path)
    named = {",": "','", ";": "';'", "\t": "tab", "|": "'|'"}[delimiter]
    return _sheet(rows, f"{encoding}, {named}-separated")


def _read_workbook(path: Path) -> list[Sheet]:
    """Every sheet of a workbook, its declared dimensions ignored: `A1:XFD1048576` would pad each sheet to 17 billion
    cells. The unzipped size (as the zip declares it, which Python's zipfile holds each part to) counts for the
    limit."""
    from openpyxl import load_workbook

    _check_size(path, path.stat().st_size)
    try:
        with zipfile.ZipFile(path) as z:
            unzipped = sum(m.file_size for m in z.infolist())
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{path}: not a readable .xlsx workbook (not a zip file)") from exc
    _check_size(path, unzipped, "unzipped")
    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # a damaged or mislabelled file raises anything from KeyError to zipfile.BadZipFile
        raise ValueError(f"{path}: not a readable .xlsx workbook ({type(exc).__name__})") from exc
    try:
        sheets = []
        for ws in book.worksheets:
            ws.reset_dimensions()
            sheets.append(_sheet(_numbered(ws.iter_rows(values_only=True), _cell_texts, path), f"sheet {ws.title!r}"))
        return sheets
    finally:
        book.close()


def _check_size(path: Path, size: int, how: str = "") -> None:
    limit = server_config().max_manifest_mb
    if size > limit * 2**20:
        raise ValueError(f"{path}: " + too_large(" ".join(("the manifest", how)).strip(), size / 2**20, limit, "MB",
                                                  "max_manifest_mb"))


def _cell_texts(values: tuple) -> list[str]:
    return ["" if v is None else str(v) for v in values]


def _numbered(rows: Iterable, to_cells: Callable[[object], list[str]], path: Path) -> list[tuple[int, list[str]]]:
    """Rows numbered as a spreadsheet shows them (from 1), the empty ones left out; refused as soon as the cells read
    (an empty row counts as one) pass the server's limit."""
    limit, read, out = server_config().max_manifest_cells, 0, []
    for i, cells in enumerate(map(to_cells, rows), start=1):
        read += max(1, len(cells))
        if read > limit:
            raise ValueError(f"{path}: the manifest is too large: more than {limit:,} cells (rows x columns; server "
                             "setting max_manifest_cells)")
        if any(c.strip() for c in cells):
            out.append((i, cells))
    return out


def _sheet(rows: list[tuple[int, list[str]]], described: str) -> Sheet:
    """The first non-empty row is the header."""
    if not rows:
        return Sheet(header=[], rows=[], described=described)
    return Sheet(header=[h.strip() for h in rows[0][1]], rows=rows[1:], described=described)
