"""Page sections that explain a partition (Regions page) and show where the data is thin (Evaluate page).

Each section reads widgets, calls a core function through a cache keyed on the files it reads, and renders
what `views.figures` builds: region signatures, the classifier's confusion on the map, the partition's
stability over Louvain's seeds, and the coverage hexagons.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import streamlit as st

from geoloc_core.analysis.coverage import coverage_geojson, run_coverage
from geoloc_core.analysis.signatures import partition_signatures
from geoloc_core.analysis.stability import partition_stability
from geoloc_core.base.images import thumbnail_uri
from geoloc_core.config import CoverageConfig, help_of
from geoloc_core.evaluate.metrics import confused_pairs, confusion, region_accuracy
from geoloc_core.runs.folders import RegionFiles, Run, fingerprint
from views import figures
from views.common import basemap_online, missing_step, offer_coverage

SIGNATURE_PHOTOS = 3


def _version(run: Run, regions: RegionFiles) -> str:
    sources = run.partition_sources(regions)
    return fingerprint([regions.csv, sources.features, *(p for p in (sources.head, sources.head_features) if p),
                        run.split])


@st.cache_data(show_spinner="Ranking each region's photos ...", max_entries=16)
def _signatures(run: Run, graph: str, regions: RegionFiles, version: str):
    return partition_signatures(run, graph, regions, n=SIGNATURE_PHOTOS)


@st.cache_data(show_spinner=False, max_entries=2)
def _abs_paths(run: Run, version: str) -> list[str]:
    return [str(p) for p in run.photo_table().abs_paths()]


@st.cache_data(show_spinner=False, max_entries=2000)
def _thumb(path: str) -> str:
    return thumbnail_uri(path, 128)


def _photo_columns(picks: pd.DataFrame, paths: list[str], key: str, prefix: str) -> pd.DataFrame:
    """One row per region (or side), its picked photos as thumbnail columns `prefix 1..n`, rank order."""
    wide = picks.assign(thumb=[_thumb(paths[p])
                               for p in picks["photo"]]).pivot(index=key, columns="rank", values="thumb")
    return wide.rename(columns=lambda r: f"{prefix} {r}").reset_index()


def signatures_section(run: Run, graph: str, regions: RegionFiles) -> None:
    st.subheader("Region signatures: typical and distinctive photos")
    sig = _signatures(run, graph, regions, _version(run, regions))
    paths = _abs_paths(run, fingerprint([run.photos]))
    table = (_photo_columns(sig.typical, paths, "region", "typical")
             .merge(_photo_columns(sig.distinctive, paths, "region", "distinctive"), on="region", how="outer"))
    margin = sig.distinctive[sig.distinctive["rank"] == 1].set_index("region")["score"].rename("best margin")
    st.dataframe(table.merge(margin, on="region", how="left"), hide_index=True, width="stretch",
                 column_config={c: st.column_config.ImageColumn(c) for c in table if c != "region"} |
                 {"best margin": st.column_config.NumberColumn(format="%.3f")})
    st.caption("Typical: closest (cosine) to the region's mean embedding. Distinctive: the largest margin of the "
               f"region's score over the best other region's, scored by the **{sig.method}**. Training photos only, "
               "one per location.")
    if sig.adjacent.empty:
        return
    pairs = sig.adjacent.to_dict("records")
    pair = st.selectbox("Two adjacent regions: the photos that tell them apart", pairs,
                        format_func=lambda p: f"{p['a']} | {p['b']} ({p['n_edges']} graph edges between them)")
    contrast = sig.contrast(int(pair["a"]), int(pair["b"]), n=SIGNATURE_PHOTOS + 1)
    left, right = st.columns(2)
    for column, side, other in ((left, pair["a"], pair["b"]), (right, pair["b"], pair["a"])):
        picks = contrast[contrast["side"] == side]
        column.markdown(f"**Region {side}**, not {other}")
        if len(picks):
            column.image([_thumb(paths[p]) for p in picks["photo"]], width=150,
                         caption=[f"{s:+.3f}" for s in picks["score"]])
    st.caption("Each photo's score for its own region minus its score for the other (same scorer as above).")


@st.cache_data(show_spinner=False, max_entries=32)
def _answers(path: str, version: str) -> pd.DataFrame:
    return pd.read_csv(path)


def confusion_section(run: Run, regions: RegionFiles, summary: pd.DataFrame, polygons: dict) -> None:
    st.subheader("Confusion on the map: which regions the classifier mixes up")
    graded = run.partition_sources(regions).held_out
    if not graded:
        st.info("No held-out answers for these regions yet: `geoloc evaluate` (the w/o probe) or a fine-tuning round "
                "writes them.")
        return
    name = st.selectbox("Classifier graded on these regions", list(graded), index=len(graded) - 1)
    answers = _answers(str(graded[name]), fingerprint([graded[name]]))
    matrix = confusion(answers, len(summary))
    acc = region_accuracy(matrix)
    st.pydeck_chart(figures.confusion_deck(summary, matrix, polygons, online=basemap_online()), height=480)
    pairs = confused_pairs(matrix).head(3)
    worst = ", ".join(f"{r.region} → {r.pred} ({r.count})" for r in pairs.itertuples()) or "none"
    st.caption(f"{name}: {np.trace(matrix)} of {matrix.sum()} held-out photos in the right region "
               f"({np.trace(matrix) / max(matrix.sum(), 1):.0%}). Fill: each region's held-out accuracy (red 0 → green "
               "1, grey: none held out); arcs run from the true region's centroid (blue end) to the region wrongly "
               f"chosen (red end), wider for more photos. Most mixed up: {worst}. Lowest accuracy: region "
               f"{int(np.nanargmin(acc)) if np.isfinite(acc).any() else '-'}.")
    with st.expander("Confusion matrix"):
        st.plotly_chart(figures.confusion_figure(matrix), width="stretch")


@st.cache_data(show_spinner="Cutting the graph once per seed ...", max_entries=64)
def _stability(run: Run, graph: str, regions: RegionFiles, version: str, resolution: float, n_seeds: int):
    return partition_stability(run, graph, regions, resolution, tuple(range(n_seeds)))


def stability_section(run: Run, graph: str, regions: RegionFiles, polygons: dict) -> None:
    st.subheader("Stability: which boundaries survive another Louvain seed")
    cut_with = run.partition_sources(regions).regions
    left, right = st.columns(2)
    resolution = left.slider("Resolution", 0.2, 3.0, float(cut_with.resolution), 0.1,
                             help="Louvain resolution: higher gives more, "
                             f"smaller regions (these regions were cut at {cut_with.resolution:g})")
    n_seeds = right.slider("Seeds", 2, 30, 10, help="Louvain is run once per seed 0 .. n-1 on the same weighted graph")
    result = _stability(run, graph, regions, _version(run, regions), resolution, n_seeds)
    counts = result.n_regions
    rate = result.edges["rate"].to_numpy()
    a, b, c = st.columns(3)
    a.metric("Regions per seed",
             f"{int(np.median(counts))}"
             + (f" ({counts.min()}–{counts.max()})" if counts.min() != counts.max() else ""))
    b.metric("Edges the seeds disagree on", f"{np.mean((rate > 0.1) & (rate < 0.9)):.0%}")
    c.metric("Boundary certainty", f"{result.boundary_certainty:.0%}",
             help="Mean share of seeds that also cut the boundary edges of the regions shown")
    st.pydeck_chart(figures.stability_deck(result.edges, polygons, online=basemap_online()), height=480)
    st.caption(f"Each graph edge between two neighbouring sites, coloured by the share of {n_seeds} seeds at "
               f"resolution {resolution:g} that put both sites in one region: red, always apart (a solid boundary); "
               "blue, always together; yellow and thicker, the seeds disagree (an accident of one run). Grey "
               "outlines: the regions shown above.")


@st.cache_data(show_spinner=False, max_entries=16)
def _coverage(run: Run, cfg: CoverageConfig, version: str) -> tuple[dict, pd.DataFrame]:
    cells, projection, size_m = run_coverage(run, cfg, build=False)  # reads kept answers: a job computes them
    return coverage_geojson(cells, projection, size_m, cfg.errors), cells


def coverage_section(run: Run) -> None:
    st.subheader("Where the data is thin: photos and location error per hexagon")
    step = missing_step(run, run.photos, run.embeddings, run.split)
    if step:
        st.info(step)
        return
    left, mid, right = st.columns(3)
    compared = run.compare_predictions.exists() and run.stale_table(run.compare_files) is None
    located = run.loo_answers.exists() and run.stale_table([run.loo_answers]) is None
    sources = (["loo"] if located else []) + (["compare"] if compared else [])
    if not located:  # a pass over every photo is a job's (`geoloc coverage`), never this page's
        st.info("Not built yet: the leave-location-out map (every photo located by the others) needs `geoloc coverage "
                f"--run {run.root}`" + (", or pick the held-out answers of `geoloc compare`." if compared else "."))
        offer_coverage(run)
    if not sources:
        return
    errors = left.selectbox("Error per photo", sources, help=help_of(CoverageConfig, "errors"),
                            format_func={"loo": "leave-location-out (every photo)",
                                         "compare": "geoloc compare (held-out)"}.get)
    hex_km = mid.number_input("Hexagon size, km (0: automatic)", 0.0, 500.0, 0.0, 1.0,
                              help=help_of(CoverageConfig, "hex_km"))
    value = right.radio("Colour by", ["median_error_km", "n_photos"], horizontal=True,
                        format_func={"median_error_km": "median error", "n_photos": "photos"}.get)
    cfg = CoverageConfig(hex_km=hex_km, errors=errors)
    geojson, cells = _coverage(run, cfg, fingerprint([run.photos, run.embeddings, run.split, run.compare_predictions,
                                                      run.loo_answers]))
    st.pydeck_chart(figures.coverage_deck(geojson, value, online=basemap_online()), height=480)
    size = geojson["properties"]["hex_size_km"]
    st.caption(f"{len(cells)} hexagons of {size:.3g} km (centre to corner) in the run's local metric plane over "
               f"{int(cells['n_photos'].sum())} photos. Red cells locate their photos worst: more photos there would "
               "help most.")
    thin = cells[cells["n_errors"] > 0].sort_values("median_error_km", ascending=False).head(5)
    st.dataframe(thin[["lat_deg", "lon_deg", "n_photos", "n_errors", "median_error_km", "p90_error_km"]],
                 hide_index=True, width="stretch")
    st.download_button("Download coverage GeoJSON", json.dumps(geojson).encode(),
                       file_name=f"{run.root.name}-coverage.geojson", mime="application/geo+json")
