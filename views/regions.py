"""Regions: the Louvain regions per graph and per iteration, on a map, and what changed between two."""

import json

import streamlit as st

from geoloc_core.config import GIS_FORMATS, ShareConfig, help_of
from geoloc_core.regions.partition import match_labels
from geoloc_core.runs.folders import fingerprint
from geoloc_core.runs.provenance import Stale
from geoloc_core.share.gis import MIME, SUFFIX, layers_bytes, region_frame, region_layers
from geoloc_core.share.maps import run_map, standalone_html
from views import analysis, figures
from views.common import basemap_online, boundary_upload, offer_stage, photos, plain, region_details, run_with_graphs

st.header("Regions")
run, graphs = run_with_graphs()
left, mid, right = st.columns(3)
graph = left.selectbox("Graph", graphs, format_func=str.upper)
options = run.iterations(graph)
if not options:  # the graph is built, its regions are not (or were cut from other photos, embeddings or settings)
    try:
        run.check(f"regions:{graph}")
    except FileNotFoundError:
        st.info(plain(run.missing(run.regions(graph).csv)))
    except Stale as stale:
        st.info(plain(stale))
    offer_stage(run, "regions", graph)
    st.stop()
iteration = mid.selectbox("Iteration", list(options))
show_edges = right.toggle("Show graph edges", value=False)

with st.sidebar.expander("Clip to a boundary"):
    boundary = boundary_upload("Boundary file (GeoPackage, GeoJSON, KML, zipped Shapefile)")

chosen = options[iteration]
labels, polygons, summary = chosen.labels(), chosen.polygons(), chosen.read_summary()
table = photos(run).merge(labels[["path", "region", "test", "outside"]], on="path")
if boundary is not None:  # the polygons as written, clipped to it; areas measured again
    clipped = region_frame(chosen, graph, iteration, table["lat_deg"].to_numpy(), table["lon_deg"].to_numpy(), boundary)
    polygons = json.loads(clipped[["region", "geometry"]].to_json())
    summary = summary.drop(columns="area_km2").merge(clipped[["region", "area_km2"]], on="region")
    table["outside"] = boundary.outside(table["lat_deg"], table["lon_deg"])
online = basemap_online()
st.pydeck_chart(figures.regions_deck(table, polygons, run.graph_edges_latlon(graph) if show_edges else None,
                                     online=online), height=560)
st.caption(f"{summary.shape[0]} regions over {len(table)} photos; held-out photos take the region of their nearest "
           f"training location. Polygons clipped to {'the uploaded boundary' if boundary else run.region_clip()}.")
if table["outside"].any():
    where = boundary.name if boundary else "clip area (the coarse 1:110m land keeps a disc around their sites)"
    st.warning(plain(f"{int(table['outside'].sum())} of {len(table)} photos lie outside the {where}: they keep their "
                     "region."))
    st.dataframe(table.loc[table["outside"], ["path", "lat_deg", "lon_deg", "region"]], hide_index=True,
                 width="stretch")

with st.expander("Regions table", expanded=True):
    details = summary.merge(region_details(run, chosen, fingerprint([chosen.csv])), on="region", how="left")
    columns = {c: st.column_config.ImageColumn(c) for c in details if c.startswith("photo ")}
    columns["area (km²)"] = st.column_config.NumberColumn(format="%.1f")
    st.dataframe(details.rename(columns={"n_photos": "training photos", "lat_deg": "centroid lat",
                                         "lon_deg": "centroid lon", "area_km2": "area (km²)"}),
                 hide_index=True, width="stretch", column_config=columns)
    st.caption("Places: the nearest town (GeoNames, 1,000+ people, offline) of each photo, most frequent first, with "
               "counts.")
d1, d2, d3 = st.columns([2, 1, 2])
d1.download_button("Map of every graph and iteration (HTML, opens offline)",
                   lambda: standalone_html(run_map(run, boundary=boundary)),
                   file_name=f"{run.root.name}-regions.html", mime="text/html")
fmt = d2.selectbox("GIS format", GIS_FORMATS, help=help_of(ShareConfig, "format"), label_visibility="collapsed")
d3.download_button(f"Regions as {fmt} (a layer per graph and iteration)",
                   lambda: layers_bytes(region_layers(run, None, boundary), fmt),
                   file_name=f"{run.root.name}-regions{SUFFIX[fmt]}", mime=MIME[fmt])

analysis.signatures_section(run, graph, chosen)
analysis.confusion_section(run, chosen, summary, polygons)
analysis.stability_section(run, graph, chosen, polygons)

if len(options) > 1:
    st.subheader("Compare two iterations")
    pick_a, pick_b = st.columns(2)
    first = pick_a.selectbox("From", list(options), index=0)
    second = pick_b.selectbox("To", list(options), index=len(options) - 1)
    a, a_polygons = options[first].labels(), options[first].polygons()
    b, b_polygons = options[second].labels(), options[second].polygons()
    pair = photos(run).merge(a[["path", "region"]],
                             on="path").merge(b[["path", "region"]], on="path", suffixes=("_a", "_b"))
    mapping = match_labels(pair["region_a"].to_numpy(), pair["region_b"].to_numpy())
    pair["region_b"] = mapping[pair["region_b"].to_numpy()]
    moved = (pair["region_a"] != pair["region_b"]).to_numpy()
    st.metric("Photos that changed region", f"{int(moved.sum())} of {len(moved)}")
    st.caption(f"{second}'s regions are renumbered to match {first}'s by shared photos, so a region keeps its colour; "
               "circled photos changed region.")
    map_a, map_b = st.columns(2)
    map_a.pydeck_chart(figures.regions_deck(pair.assign(region=pair["region_a"]), a_polygons, online=online,
                                            ringed=moved), height=420)
    map_b.pydeck_chart(figures.regions_deck(pair.assign(region=pair["region_b"]),
                                            figures.renumbered(b_polygons, mapping), online=online,
                                        ringed=moved), height=420)
    if moved.any():
        st.dataframe(pair.loc[moved,
                              ["path", "region_a", "region_b"]].rename(columns={"region_a": first, "region_b": second}),
                     hide_index=True, width="stretch")
