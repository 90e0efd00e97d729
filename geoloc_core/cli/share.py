"""Commands that hand a run to others: `export` (GIS files), `map` and `report` (self-contained HTML)."""

from __future__ import annotations

import time
from pathlib import Path

from geoloc_core.cli.flags import Command, add_graphs, add_settings, settings
from geoloc_core.config import ShareConfig
from geoloc_core.runs.folders import Run


def add_commands(command: Command) -> None:
    """export, map, report."""
    c = command("export", _cmd_export, "regions (every graph x iteration a layer) or predictions as GeoPackage, KML, "
                "zipped Shapefile or GeoJSON, in WGS 84")
    add_graphs(c)
    add_settings(c, ShareConfig, "share", only=("format", "boundary"))
    c.add_argument("--predictions", type=Path, default=None,
                   help="export this predictions.csv / .geojson of `geoloc predict` instead")
    c.add_argument("--out", type=Path, required=True,
                   help="the file to write (.gpkg, .kml, .zip for the Shapefile, .geojson)")
    c = command("map", _cmd_map, "one self-contained HTML map (opens offline) of the run's regions, photos and, "
                "optionally, predictions")
    add_graphs(c)
    add_settings(c, ShareConfig, "share", only=("boundary", "tiles", "thumb_px"))
    c.add_argument("--predictions", type=Path, default=None,
                   help="a predictions.csv / .geojson of `geoloc predict` to draw as well")
    c.add_argument("--out", type=Path, default=Path("regions.html"), help="HTML file (default: regions.html)")
    c = command("report", _cmd_report, "one self-contained HTML report of the run: data, region maps, experiment and "
                "compare tables")
    add_settings(c, ShareConfig, "share", only=("tiles", "thumb_px"))
    c.add_argument("--out", type=Path, default=Path("report.html"), help="HTML file (default: report.html)")


def _boundary(cfg: ShareConfig, run: Run | None):
    """The boundary to clip to, with its photos outside it printed (count and which)."""
    if not cfg.boundary:
        return None
    from geoloc_core.regions.boundaries import boundary_area

    area = boundary_area(cfg.boundary)
    if run is not None:
        table = run.photo_table()
        outside = area.outside(table.lat_deg, table.lon_deg)
        names = table.frame["path"][outside].tolist()
        print(f"{len(names)} of {len(outside)} photos lie outside the {area.name}" + (":" if names else ""))
        for name in names[:20]:
            print(f"  {name}")
        if len(names) > 20:
            print(f"  ... and {len(names) - 20} more (each map popup and each layer's n_outside says which)")
    return area


def _cmd_export(a) -> None:
    from geoloc_core.locate.predict import read_predictions
    from geoloc_core.share.gis import SUFFIX, prediction_layers, region_layers, write_layers

    cfg = settings(a, ShareConfig, "share")
    named = {suffix: fmt for fmt, suffix in SUFFIX.items()}.get(a.out.suffix.lower())
    if named and named != cfg.format:  # a file named .kml holding a GeoPackage would open nowhere
        raise ValueError(f"--out {a.out} names a {named} file but --format is {cfg.format}; "
                         f"give --format {named} or another name")
    if a.predictions and cfg.boundary:  # predictions have no polygons to clip: said, not silently ignored
        raise ValueError(f"--boundary {cfg.boundary} clips a run's region polygons; "
                         f"it does not apply to --predictions {a.predictions}")
    if a.predictions:
        layers = prediction_layers(read_predictions(a.predictions))
    else:
        layers = region_layers(Run(a.run), a.graphs, _boundary(cfg, Run(a.run)))
    path = write_layers(layers, a.out, cfg.format)
    print(f"{len(layers)} layers ({', '.join(layers)}) -> {path} ({cfg.format}, WGS 84 / EPSG:4326)")


def _cmd_map(a) -> None:
    from geoloc_core.locate.predict import read_predictions
    from geoloc_core.share.maps import run_map, write_map

    cfg, start = settings(a, ShareConfig, "share"), time.perf_counter()
    predictions = read_predictions(a.predictions) if a.predictions else None
    fmap = run_map(Run(a.run), a.graphs, predictions, _boundary(cfg, Run(a.run)), cfg.tiles, cfg.thumb_px)
    path = write_map(fmap, a.out)
    print(f"map -> {path} ({path.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - start:.1f} s; opens offline)")


def _cmd_report(a) -> None:
    from geoloc_core.share.report import write_report

    cfg, start = settings(a, ShareConfig, "share"), time.perf_counter()
    path = write_report(Run(a.run), a.out, cfg.tiles, cfg.thumb_px)
    print(f"report -> {path} ({path.stat().st_size / 1e6:.1f} MB, {time.perf_counter() - start:.1f} s; opens offline)")
