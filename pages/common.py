"""What every page shares: the run being looked at and cached loaders over its artefacts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import streamlit as st
from PIL import Image

from geoloc_core import runs, viz
from geoloc_core.finetune import finetune_dirs
from geoloc_core.ingest import load_photo_table
from geoloc_core.pipeline import load_split
from geoloc_core.places import region_places
from geoloc_core.predict import open_predictor
from geoloc_core.region_head import round_checkpoints
from geoloc_core.regions import region_areas_km2

RUNS = Path(os.environ.get("GEOLOC_RUNS", "runs"))


def choose_run() -> None:
    """Sidebar: pick a run directory (one `geoloc run` made); remembered in the session."""
    found = sorted(str(p.parent) for p in RUNS.glob("*/photos.csv"))
    default = os.environ.get("GEOLOC_RUN")
    options = ([default] if default and default not in found else []) + found
    if not options:
        st.sidebar.warning("No run yet: `.venv/bin/geoloc run` builds one from ../shared/data/croatia-streetview.")
        st.session_state["run_dir"] = None
        return
    st.session_state["run_dir"] = st.sidebar.selectbox("Run", options, index=options.index(default) if default in options else 0)


def run_dir() -> Path | None:
    value = st.session_state.get("run_dir")
    return Path(value) if value else None


def run_with_graphs() -> tuple[Path, list[str]]:
    """The chosen run and the proximity graphs it has built; stops the page with a hint otherwise."""
    run = run_dir()
    if run is None:
        st.stop()
    graphs = [g for g in ("dt", "gg", "rng") if (run / f"graph_{g}.npy").exists()]
    if not graphs:
        st.info("This run has no graphs yet: `geoloc run` (or `geoloc graph` and `geoloc regions`) makes them.")
        st.stop()
    return run, graphs


@st.cache_data(show_spinner=False)
def photos(run: str) -> pd.DataFrame:
    frame = pd.read_csv(Path(run) / "photos.csv", dtype={"path": str, "group": str}, keep_default_na=False)
    return frame[["path", "lat_deg", "lon_deg", "group"]]


@st.cache_resource(show_spinner="Loading the predictor once for this run ...")
def predictor(run: str, descriptor: str, region_head: bool, classifiers: tuple[str, ...]):
    """Shared by every session (read-only): index, verifier, encoder and region classifier are loaded once per run and choice,
    and again when a fine-tuning round adds a classifier (`classifiers`, see `classifier_versions`).

    Its database leaves out the run's held-out locations, so their photos are honest examples.
    """
    return open_predictor(run, descriptor, database="train", region_head=region_head)


def classifier_versions(run: Path) -> tuple[str, ...]:
    """The run's fine-tuning round checkpoints with the time each was written: what the predicted region can come from."""
    return tuple(f"{p}@{p.stat().st_mtime_ns}" for p in round_checkpoints(run))


@st.cache_data(show_spinner=False)
def held_out_photos(run: str) -> pd.DataFrame:
    """The run's held-out photos (name, absolute path, lat_deg, lon_deg): examples the predictor has never seen."""
    table = load_photo_table(Path(run))
    _, is_test = load_split(Path(run))
    return pd.DataFrame({"name": table.frame["path"][is_test].to_numpy(),
                         "path": [str(p) for p, t in zip(table.abs_paths(), is_test) if t],
                         "lat_deg": table.lat_deg[is_test], "lon_deg": table.lon_deg[is_test]})


@st.cache_data(show_spinner=False, max_entries=500)
def thumbnail(path: str, side: int = 320) -> Image.Image | None:
    """`viz.upright` for database photos, cached: the same neighbours come back prediction after prediction."""
    return viz.upright(path, side)


@st.cache_data(ttl=600, show_spinner=False)
def basemap_online() -> bool:
    """Whether tiles can be had (checked once per 10 minutes; offline machines get the outline map at once)."""
    return viz.tiles_reachable()


@st.cache_data(show_spinner="Naming places and making thumbnails ...")
def region_details(run: str, csv: str, thumbs: int = 3) -> pd.DataFrame:
    """Per region of one partition (`csv`): the top places of its photos (offline geocoder) and a few thumbnails."""
    table = load_photo_table(Path(run))
    frame = table.frame[["path", "lat_deg", "lon_deg"]].assign(abs_path=[str(p) for p in table.abs_paths()])
    frame = frame.merge(pd.read_csv(csv, keep_default_na=False)[["path", "region"]], on="path")
    places = region_places(frame["region"].to_numpy(), frame["lat_deg"].to_numpy(), frame["lon_deg"].to_numpy())
    rows = []
    for region, members in frame.groupby("region"):
        picks = members["abs_path"].iloc[np.linspace(0, len(members) - 1, min(thumbs, len(members))).astype(int)]
        rows.append({"region": region, "places": places[int(region)],
                     **{f"photo {i + 1}": viz.thumbnail_uri(p) for i, p in enumerate(picks)}})
    return pd.DataFrame(rows)


@st.cache_data(show_spinner=False)
def region_polygon(regions_csv: Path | None, region: int | None) -> dict | None:
    """One region's polygon (GeoJSON) from the regions a predictor labels with (`Predictor.regions`)."""
    path = regions_csv.with_suffix(".geojson") if regions_csv else None
    if region is None or path is None or not path.exists():
        return None
    features = [f for f in json.loads(path.read_text())["features"] if f["properties"]["region"] == region]
    return {"type": "FeatureCollection", "features": features}


def iterations(run: Path, graph: str) -> dict[str, Path]:
    """{"w/o": regions csv, "FT1": ..., ...} for one graph: the run's own regions, then any fine-tuning rounds."""
    found = {"w/o": run / f"regions_{graph}.csv"} if (run / f"regions_{graph}.csv").exists() else {}
    for ft in finetune_dirs(run, graph):
        rounds = {int(p.stem.removeprefix("regions_r")): p.with_suffix(".csv") for p in ft.glob("regions_r*.geojson")}
        for k in sorted(rounds):
            found[f"after FT{k}" if k else "w/o (fine-tuning run)"] = rounds[k]
    return found


def read_regions(csv: Path) -> tuple[pd.DataFrame, dict, pd.DataFrame]:
    """(per-photo regions, polygons GeoJSON, per-region summary) written beside each other."""
    polygons = json.loads(csv.with_suffix(".geojson").read_text())
    summary = pd.read_csv(csv.with_name(csv.stem + "_summary.csv"))
    if "area_km2" not in summary:  # written before regions recorded their areas
        frame = gpd.GeoDataFrame.from_features(polygons["features"], crs="EPSG:4326")
        summary = summary.merge(pd.DataFrame({"region": frame["region"], "area_km2": region_areas_km2(frame)}), on="region", how="left")
    return pd.read_csv(csv, keep_default_na=False), polygons, summary


def graph_edges(run: Path, graph: str) -> pd.DataFrame:
    """The graph's edges as coordinate pairs, for drawing."""
    sites = pd.read_csv(run / "sites.csv")
    e = runs.read_npy(run / f"graph_{graph}.npy")
    lat, lon = sites["lat_deg"].to_numpy(), sites["lon_deg"].to_numpy()
    return pd.DataFrame({"lat0": lat[e[:, 0]], "lon0": lon[e[:, 0]], "lat1": lat[e[:, 1]], "lon1": lon[e[:, 1]]})
