"""A run report: one self-contained HTML page to hand on (data, regions, maps, experiment and compare tables, charts).

The page needs no network: the region map is the folium map of `maps.run_map` (Leaflet inlined)
in an iframe's `srcdoc`, and the charts are `charts`' plotly specs, drawn by plotly.js inlined once
(plotly ships it in the package; it is most of the file's size, about 4.7 MB).
"""

from __future__ import annotations

import datetime
import html
from pathlib import Path

import numpy as np
import pandas as pd

from geoloc_core.base import storage
from geoloc_core.base.geo import haversine_km
from geoloc_core.evaluate.stats import with_intervals
from geoloc_core.runs.folders import Run
from geoloc_core.runs.stages import summary_rows
from geoloc_core.share.charts import chart_html, compare_chart, experiment_chart, plotly_js
from geoloc_core.share.gis import region_frame
from geoloc_core.share.maps import run_map, standalone_html

STYLE = """<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; padding: 0 1em; }
h1 { margin-bottom: 0.1em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.8em; }
table { border-collapse: collapse; font-size: 0.85em; margin: 0.6em 0; }
td, th { border: 1px solid #ddd; padding: 3px 7px; }
th { background: #f3f3f3; } td { text-align: right; } td:first-child, td.text { text-align: left; }
.facts { display: flex; gap: 2.5em; flex-wrap: wrap; } .facts div { font-size: 0.9em; }
.facts b { display: block; font-size: 1.6em; }
iframe { width: 100%; height: 620px; border: 1px solid #ccc; } .note { color: #555; font-size: 0.9em; }
</style>"""


def write_report(run: Run, path: Path, tiles: bool = True, thumb_px: int = 64) -> Path:
    """The report of `run` as one HTML file, written atomically."""
    return storage.write_bytes(Path(path), report_html(run, tiles, thumb_px).encode("utf-8"))


def report_html(run: Run, tiles: bool = True, thumb_px: int = 64) -> str:
    """The report's HTML: Data, Photos without GPS, Regions, Experiment, Compare (each only where the run has it)."""
    charts = _Charts()
    sections = [_data_section(run), _located_section(run), _regions_section(run, tiles, thumb_px),
                _experiment_section(run, charts), _compare_section(run, charts)]
    title = f"geoloc report: {html.escape(run.root.name)}"
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title>{STYLE}</head><body>"
            f"<h1>{title}</h1><p class='note'>Run folder {html.escape(str(run.root.resolve()))} · written {stamp} · "
            "coordinates WGS 84 · opens without a network</p>" + "".join(s for s in sections if s) + "</body></html>")


def _data_section(run: Run) -> str:
    meta, table = run.read_ingest_meta(), run.photo_table()
    lat, lon = table.lat_deg, table.lon_deg
    ns_km = float(haversine_km(lat.min(), lon.mean(), lat.max(), lon.mean()))
    ew_km = float(haversine_km(lat.mean(), lon.min(), lat.mean(), lon.max()))
    facts = {"photos": meta["n_accepted"], "rejected": meta["n_rejected"], "locations": table.frame["group"].nunique()}
    if run.split.exists():
        facts["held-out photos"] = int(run.read_split()[1].sum())
    out = ["<h2>Data</h2><div class='facts'>", *(f"<div><b>{v:,}</b>{k}</div>" for k, v in facts.items()), "</div>",
           f"<p>Source {html.escape(str(meta['root']))}. Extent: latitude {lat.min():.4f} to {lat.max():.4f}, "
           f"longitude {lon.min():.4f} to {lon.max():.4f} (about {ns_km:,.1f} km north-south by {ew_km:,.1f} km "
           "east-west).</p>"]
    out += [f"<p class='note'>Warning: {html.escape(w)}</p>" for w in meta.get("warnings", [])]
    rejected = run.read_rejected() if run.rejected.exists() else pd.DataFrame()
    if len(rejected):
        reasons = (rejected["reason"].str.split(":").str[0].value_counts().rename_axis("reason")
                   .reset_index(name="files"))
        out += ["<h3>Rejected files, by reason</h3>", _table(reasons),
                f"<details><summary>all {len(rejected)} rejected files</summary>",
                _table(rejected), "</details>"]
    return "".join(out)


def _located_section(run: Run) -> str:
    """The photos that came without a location and the run's answers for them, each named by its nearest town."""
    if not run.located.exists():
        return ""
    title = "<h2>Photos without GPS, located</h2>"
    if stale := _stale(run, [run.located]):
        return title + stale
    located = pd.read_csv(run.located, keep_default_na=False, na_values=[""])
    shown = [c for c in ("path", "place", "lat_deg", "lon_deg", "radius_km", "coverage", "region", "error")
             if c in located]
    return (title + f"<p>{len(located)} photos, located by the run's default predictor (the town named is the one "
            "nearest the predicted location, from GeoNames' towns of 1,000+ people):</p>"
            + _table(located[shown].round({"lat_deg": 5, "lon_deg": 5})))


def _regions_section(run: Run, tiles: bool, thumb_px: int) -> str:
    graphs = run.graphs()
    if not any(run.iterations(g) for g in graphs):
        return ""
    table = run.photo_table()
    out = ["<h2>Regions</h2>"]
    rows = summary_rows(run.root)
    if rows:
        cols = [c for c in ("graph", "n_edges", "n_regions", "modularity", "area_km2", "acc", "macro_f1", "chance_acc",
                            "median_km", "acc@25km") if any(c in r for r in rows)]
        out += ["<p>Per graph, the w/o regions (pretrained features) and the held-out figures of <code>geoloc "
                "run</code>:</p>",
                _table(pd.DataFrame(rows).reindex(columns=cols))]
    out.append(f"<p class='note'>Polygons clipped to: {html.escape(run.region_clip())} (areas in km², measured after "
               "clipping, in an equal-area projection). Switch graph and iteration in the map's layer control; click "
               "a region or a photo.</p>")
    page = standalone_html(run_map(run, graphs, tiles=tiles, thumb_px=thumb_px))
    out.append(f"<iframe title='region map' srcdoc=\"{html.escape(page, quote=True)}\"></iframe>")
    for graph in graphs:
        for iteration, files in run.iterations(graph).items():
            frame = region_frame(files, graph, iteration, table.lat_deg, table.lon_deg)
            outside = int(files.labels()["outside"].sum())
            note = f", {outside} photos outside the clip area" if outside else ""
            out += [f"<details><summary>{graph.upper()} {html.escape(iteration)}: {len(frame)} regions, "
                    f"{frame['area_km2'].sum():,.0f} km²{note}</summary>",
                    _table(frame[["region", "n_photos", "n_outside", "area_km2", "lat_deg", "lon_deg", "places"]].round(
                        {"area_km2": 1, "lat_deg": 4, "lon_deg": 4})), "</details>"]
    return "".join(out)


def _experiment_section(run: Run, charts: _Charts) -> str:
    out = []
    for done in run.cross_validations():
        if done.table_csv.exists() and (stale := _stale(run, done.files)):
            out.append(stale)
        elif done.table_csv.exists():
            table = pd.read_csv(done.table_csv, keep_default_na=False, na_values=[""])
            out += [f"<h3>{int(table['folds'].iloc[0])}-fold over locations ({html.escape(done.root.name)})</h3>",
                    charts.add(experiment_chart(table)),
                    _table(with_intervals(table.drop(columns=["folds", "round"], errors="ignore"))),
                    "<p class='note'>Each figure over all folds with its 95 % interval (a bootstrap over held-out "
                    "locations).</p>"]
            if done.verdicts.exists():
                verdicts = pd.read_csv(done.verdicts)
                out += ["<p>Paired differences (the same held-out photos):</p>",
                        _table(verdicts.assign(interval=[f"[{lo:.3g}, {hi:.3g}]"
                                                         for lo, hi in zip(verdicts["lo"], verdicts["hi"])])
                               [["comparison", "metric", "difference", "interval", "verdict"]])]
    if run.experiment.table_csv.exists() and (stale := _stale(run, run.experiment.files)):
        out.append(stale)
    elif run.experiment.table_csv.exists():
        table = pd.read_csv(run.experiment.table_csv, keep_default_na=False, na_values=[""])
        out += ["<h3>The run's one split</h3>", charts.add(experiment_chart(table)), _table(table)]
    return "<h2>Experiment: region classification on held-out locations</h2>" + "".join(out) if out else ""


def _compare_section(run: Run, charts: _Charts) -> str:
    if not run.compare_table.exists():
        return ""
    if stale := _stale(run, run.compare_files):
        return "<h2>Locating photos: every method on held-out locations</h2>" + stale
    compare = pd.read_csv(run.compare_table)
    out = ["<h2>Locating photos: every method on held-out locations</h2>", charts.add(compare_chart(compare)),
           _table(with_intervals(compare))]
    if run.compare_verdicts.exists():
        verdicts = pd.read_csv(run.compare_verdicts)
        out += ["<p>Paired differences (the same held-out photos):</p>",
                _table(verdicts.assign(interval=[f"[{lo:.3g}, {hi:.3g}]"
                                                 for lo, hi in zip(verdicts["lo"], verdicts["hi"])])
                       [["comparison", "metric", "difference", "interval", "verdict"]])]
    return "".join(out)


def _stale(run: Run, files: list[Path]) -> str:
    """A note in place of a table that no longer traces to the run as it is ("" where it does): never shown stale."""
    why = run.stale_table(files)
    return f"<p class='note'>{html.escape(files[0].name)} is left out: {html.escape(why)}</p>" if why else ""


class _Charts:
    """Chart specs as HTML: plotly.js (from the installed plotly package) inlined once, before the first chart.

    Without plotly installed, the report says so where each chart would be; its tables are still complete."""

    def __init__(self):
        self.count = 0
        self.script = plotly_js()

    def add(self, spec: dict) -> str:
        if self.script is None:
            return "<p class='note'>(chart left out: plotly is not installed)</p>"
        self.count += 1
        head = f"<script>{self.script}</script>" if self.count == 1 else ""
        return head + chart_html(spec, f"chart{self.count}")


def _table(frame: pd.DataFrame) -> str:
    def cell(v) -> str:
        if isinstance(v, (float, np.floating)):
            return "" if np.isnan(v) else f"{v:,.3f}" if abs(v) < 100 else f"{v:,.1f}"
        return html.escape(str(v))
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>"
                   for row in frame.itertuples(index=False))
    return f"<table><tr>{head}</tr>{body}</table>"
